"""Reads that other code needs: how far an experiment and its jobs have come and how long they still need."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import Coalesce

from evaluator.engine.generate import Sampling
from evaluator.models import Comparison, Experiment, Generation, Job


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
    # Qualification checks are answered by every rater, outside the k votes a comparison needs.
    comparisons = Comparison.objects.filter(
        experiment=experiment, is_identical=False, qualification=False
    ).aggregate(
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


@dataclass(frozen=True)
class JobProgress:
    """A job's arm: outputs written of all it has, how long the job has run, and how long it still needs."""

    done: int
    total: int
    seconds: float | None  # running: so far; finished: start to end; queued: None
    seconds_left: float | None  # running, from the job's own rate so far; None until it stored an output

    @property
    def percent(self) -> int:
        return math.floor(100 * self.done / self.total) if self.total else 0


def job_progress(*, jobs: Sequence[Job], now: datetime) -> dict[int, JobProgress]:
    """Per job id: its arm's outputs done out of all of them, its duration and, while it runs, the time
    its arm's pending outputs still need at the rate the job has stored outputs so far."""
    arms = {(job.experiment_id, job.variant_id) for job in jobs}
    counts: dict[tuple[int, int], dict] = {}
    if arms:
        condition = Q()
        for experiment_id, variant_id in arms:
            condition |= Q(experiment_id=experiment_id, variant_id=variant_id)
        rows = (
            Generation.objects.filter(condition)
            .exclude(status=Generation.Status.CANCELLED)
            .values("experiment_id", "variant_id")
            .annotate(
                total=Count("pk"),
                done=Count("pk", filter=Q(status=Generation.Status.DONE)),
                pending=Count("pk", filter=Q(status=Generation.Status.PENDING)),
            )
            .order_by()
        )
        counts = {(row["experiment_id"], row["variant_id"]): row for row in rows}
    progress = {}
    for job in jobs:
        arm = counts.get((job.experiment_id, job.variant_id), {"total": 0, "done": 0, "pending": 0})
        seconds = seconds_left = None
        if job.started_at is not None:
            seconds = ((job.finished_at or now) - job.started_at).total_seconds()
        if job.status == Job.Status.RUNNING and seconds and job.stored:
            seconds_left = arm["pending"] * seconds / job.stored
        progress[job.pk] = JobProgress(
            done=arm["done"], total=arm["total"], seconds=seconds, seconds_left=seconds_left
        )
    return progress
