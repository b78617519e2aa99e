"""Write an experiment's routing as TensorBoard histograms, per arm and category."""

from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from evaluator.management.lookup import by_id_or_name
from evaluator.models import Category, Experiment, Variant
from evaluator.routing import routing_totals


class Command(BaseCommand):
    help = (
        "Export expert routing to TensorBoard: for each arm and category, a histogram of expert uses per "
        "layer, plus mean active experts per token and routing entropy as scalars. "
        "View with `tensorboard --logdir DIR`."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("experiment", help="experiment id or exact name")
        parser.add_argument("--logdir", required=True, type=Path, help="folder for the event files")

    def handle(self, *args, experiment: str, logdir: Path, **options) -> None:
        from torch.utils.tensorboard import SummaryWriter

        chosen = by_id_or_name(Experiment, experiment, "experiment")
        totals = routing_totals(experiment=chosen)
        if not totals:
            raise CommandError(f"Experiment {chosen.name!r} has no finished outputs with routing traces yet.")
        arms = dict(Variant.objects.filter(pk__in={v for v, _ in totals}).values_list("pk", "name"))
        categories = dict(Category.objects.values_list("pk", "slug"))
        written = 0
        for (variant_id, category_id), entry in totals.items():
            category = "all" if category_id is None else categories[category_id]
            run = logdir / _safe(arms[variant_id]) / _safe(category)
            with SummaryWriter(log_dir=str(run)) as writer:
                experts = np.arange(entry.counts.shape[1], dtype=np.float64)
                limits = (experts + 0.5).tolist()
                for layer, counts in enumerate(entry.counts):
                    total = int(counts.sum())
                    if not total:
                        continue
                    writer.add_histogram_raw(
                        tag="expert_uses",
                        min=0.0,
                        max=float(experts[-1]),
                        num=total,
                        sum=float((experts * counts).sum()),
                        sum_squares=float((experts**2 * counts).sum()),
                        bucket_limits=limits,
                        bucket_counts=counts.astype(np.float64).tolist(),
                        global_step=layer,
                    )
                    writer.add_scalar(
                        "active_experts_per_token_by_layer", entry.active_per_layer[layer], layer
                    )
                writer.add_scalar("mean_active_experts_per_token", entry.mean_active_experts, 0)
                writer.add_scalar("mean_routing_entropy_nats", entry.mean_entropy, 0)
            written += 1
        self.stdout.write(f"Wrote {written} runs (arm × category) to {logdir}; step = layer.")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in name)
