"""A small rating study for the researcher's pages: crafted outputs with known texts and costs, and votes
and flags cast through the rating services."""

from django.utils import timezone

from dashboard.models import Rating
from dashboard.services import flag_comparison, next_comparison
from evaluator import jobs
from evaluator.models import Comparison, Experiment, Generation, Variant
from tests.factories import make_checkpoint, scheduled_experiment

PROMPTS = [
    ("routine", "Dear team,\n"),
    ("routine", "Hello all,\nPlease"),
    ("philosophy", "Premise one:"),
    ("philosophy", "Is a heap of sand"),
]


def routing_summary(k: int, tokens: int = 3) -> dict:
    return {
        "tokens": tokens,
        "layers": 2,
        "counts": [[tokens * k, 0], [tokens * k, 0]],
        "mean_active_experts": float(k),
        "mean_active_experts_per_layer": [float(k), float(k)],
        "mean_entropy": 0.5,
        "compute_experts_per_token": float(k),
    }


def study(
    model_path, *, depths=(1, 4), prompts=PROMPTS, texts=None, name: str = "study", **fields
) -> Experiment:
    """A scheduled experiment whose outputs are written here: "<arm> on <prompt>" unless ``texts`` maps
    (prompt text, arm name) to another text. Every arm's cost follows its k."""
    fields.setdefault("min_seconds_per_vote", 0)
    experiment = scheduled_experiment(
        make_checkpoint(model_path, name=f"tiny-{name}"), depths=depths, prompts=prompts, name=name, **fields
    )
    texts = texts or {}
    for output in Generation.objects.filter(experiment=experiment).select_related("variant", "prompt"):
        k = output.variant.depth.get("k")
        Generation.objects.filter(pk=output.pk).update(
            status=Generation.Status.DONE,
            text=texts.get(
                (output.prompt.text, output.variant.name), f"{output.variant.name} on {output.prompt.text}"
            ),
            prompt_tokens=4,
            new_tokens=3,
            seconds=0.1,
            tokens_per_s=30.0 / (k or 1),
            depth_k=k,
            mean_active_experts=float(k or 2),
            compute_experts=float(k or 2) + 0.5,
            routing=routing_summary(k or 2),
            finished_at=timezone.now(),
        )
    jobs.mark_ready_comparisons(
        experiment_id=experiment.pk, generation_ids=list(experiment.generations.values_list("pk", flat=True))
    )
    return experiment


def arm(experiment: Experiment, name: str) -> Variant:
    return experiment.variants.get(name=name)


def vote_for(rater, comparison: Comparison, arm_name: str | None) -> Rating:
    """The rater's vote on the comparison: for ``arm_name`` (a tie when None)."""
    sides = {comparison.left.variant.name: "left", comparison.right.variant.name: "right"}
    verdict = sides[arm_name] if arm_name is not None else "tie"
    return Rating.objects.create(comparison=comparison, rater=rater, verdict=verdict, seconds=10.0)


def flag_one(rater, reason: str) -> Comparison:
    """The rater flags the comparison handed to them, through the rating service."""
    comparison = next_comparison(rater=rater).comparison
    flag_comparison(rater=rater, token=comparison.token, reason=reason)
    return Comparison.objects.get(pk=comparison.pk)
