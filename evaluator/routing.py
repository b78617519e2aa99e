"""Routing summaries added up per arm and category, for pictures and TensorBoard."""

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from evaluator.models import Experiment, Generation


@dataclass
class RoutingTotals:
    """Expert uses per layer and expert, with the tokens and entropy they came from."""

    counts: np.ndarray
    tokens: int = 0
    entropy_sum: float = 0.0
    generations: int = 0
    active_per_layer: list[float] = field(default_factory=list)

    @property
    def mean_active_experts(self) -> float:
        layers = self.counts.shape[0]
        return float(self.counts.sum() / (self.tokens * layers)) if self.tokens and layers else 0.0

    @property
    def mean_entropy(self) -> float:
        layers = self.counts.shape[0]
        return self.entropy_sum / (self.tokens * layers) if self.tokens and layers else 0.0


def routing_totals(experiment: Experiment) -> dict[tuple[str, str], RoutingTotals]:
    """(arm name, category slug) → totals, over the experiment's finished generations; category "all" too."""
    totals: dict[tuple[str, str], RoutingTotals] = {}
    rows = (
        Generation.objects.filter(experiment=experiment, status=Generation.Status.DONE, routing__isnull=False)
        .values_list("variant__name", "prompt__category__slug", "routing")
        .iterator(chunk_size=500)
    )
    for arm, category, routing in rows:
        counts = np.asarray(routing.get("counts") or [], dtype=np.int64)
        if counts.ndim != 2 or not counts.size:
            continue
        for key in ((arm, category), (arm, "all")):
            entry = totals.get(key)
            if entry is None:
                entry = totals[key] = RoutingTotals(counts=np.zeros_like(counts))
            if entry.counts.shape != counts.shape:
                continue
            entry.counts += counts
            entry.tokens += int(routing.get("tokens", 0))
            layers = counts.shape[0]
            entry.entropy_sum += (
                float(routing.get("mean_entropy", 0.0)) * int(routing.get("tokens", 0)) * layers
            )
            entry.generations += 1
    for entry in totals.values():
        entry.active_per_layer = (
            (entry.counts.sum(1) / entry.tokens).round(4).tolist() if entry.tokens else []
        )
    return dict(sorted(totals.items()))


def categories_by_arm(totals: dict[tuple[str, str], RoutingTotals]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for arm, category in totals:
        out[arm].append(category)
    return dict(out)
