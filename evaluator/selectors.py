"""Reads that other code needs: how far an experiment has come and how long it still needs."""

import math
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import Coalesce

from evaluator.engine.generate import Sampling
from evaluator.models import Comparison, Experiment, Generation


@dataclass(frozen=True)
class Progress:
    outputs_done: int
    outputs_failed: int
    outputs_pending: int
    outputs_total: int
    comparisons_ready: int
    comparisons_total: int
    votes: int
    votes_needed: int
    seconds_left: float | None
    tokens_per_s: float | None


def estimate_seconds_left(experiment: Experiment, arms: list[dict]) -> tuple[float | None, float | None]:
    """Seconds the pending outputs still need on one worker, from the speed measured so far, and that speed.

    Each batch decodes up to max_new_tokens per row at the measured tokens/s of one stream (an arm not yet
    measured is assumed to run at the mean speed of the others). None when nothing was measured yet.
    """
    pending = sum(arm["pending"] for arm in arms)
    speeds = [arm["speed"] for arm in arms if arm["speed"]]
    if not speeds:
        return (0.0 if pending == 0 else None), None
    mean_speed = sum(speeds) / len(speeds)
    try:
        max_new_tokens = Sampling.from_dict(experiment.sampling or {}).max_new_tokens
    except (TypeError, ValueError):
        return None, mean_speed
    batch_size = settings.ENGINE_BATCH_SIZE
    seconds = sum(
        math.ceil(arm["pending"] / batch_size) * max_new_tokens / (arm["speed"] or mean_speed) for arm in arms
    )
    return seconds, mean_speed


def experiment_progress(experiment: Experiment) -> Progress:
    arms = list(
        Generation.objects.filter(experiment=experiment)
        .values("variant_id")
        .annotate(
            total=Count("pk"),
            done=Count("pk", filter=Q(status=Generation.Status.DONE)),
            failed=Count("pk", filter=Q(status=Generation.Status.FAILED)),
            pending=Count("pk", filter=Q(status=Generation.Status.PENDING)),
            speed=Avg("tokens_per_s", filter=Q(status=Generation.Status.DONE, tokens_per_s__gt=0)),
        )
        .order_by()
    )
    comparisons = Comparison.objects.filter(experiment=experiment, is_identical=False).aggregate(
        total=Count("pk"),
        ready=Count("pk", filter=Q(ready_at__isnull=False)),
        votes=Coalesce(Sum("ratings_count"), 0),
    )
    seconds, speed = estimate_seconds_left(experiment, arms)
    return Progress(
        outputs_done=sum(a["done"] for a in arms),
        outputs_failed=sum(a["failed"] for a in arms),
        outputs_pending=sum(a["pending"] for a in arms),
        outputs_total=sum(a["total"] for a in arms),
        comparisons_ready=comparisons["ready"],
        comparisons_total=comparisons["total"],
        votes=comparisons["votes"],
        votes_needed=comparisons["total"] * experiment.raters_per_comparison,
        seconds_left=seconds,
        tokens_per_s=speed,
    )
