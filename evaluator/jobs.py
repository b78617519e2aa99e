"""Generation jobs: the one place that talks to Celery, the claims a job holds on its rows, and its stores.

A job claims the pending rows of its arm by writing its Celery task id on them. Another job leaves a
claim alone while it is younger than ``settings.JOB_TIME_LIMIT`` (the holder may still be working) and
takes it over when it is older (the holder is dead). A message delivered again under the same task id
(late acknowledgement after a worker died, a retry) takes its own rows back, so the work still finishes.
"""

import logging
import random
import re
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from config.celery import app
from evaluator import events, measuring
from evaluator.engine.generate import Result
from evaluator.models import Comparison, Experiment, Generation, Job

log = logging.getLogger(__name__)

GENERATE_ARM_TASK = "evaluator.tasks.generate_arm"
LIKELIHOOD_ARM_TASK = "evaluator.tasks.likelihood_arm"


def enqueue_arm(*, experiment_id: int, variant_id: int) -> Job:
    """Hand one arm to the GPU queue: a Job row first, then the message with the same id."""
    job = Job.objects.create(experiment_id=experiment_id, variant_id=variant_id, task_id=str(uuid.uuid4()))
    try:
        # Sent by name: the task module imports this one, not the other way round.
        app.send_task(
            GENERATE_ARM_TASK,
            args=[experiment_id, variant_id],
            task_id=job.task_id,
            queue="gpu",
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception:
        job.delete()
        raise
    enqueue_likelihood(experiment_id=experiment_id, variant_id=variant_id)
    return job


def enqueue_likelihood(*, experiment_id: int, variant_id: int) -> None:
    """Queue the arm's likelihood job behind its generation job, on the same queue.

    It has no Job row: it writes only Likelihood rows, once per prompt, and does nothing for a stopped
    experiment. A broker that refuses it costs the measure, not the outputs, so it is logged, not raised.
    """
    try:
        app.send_task(LIKELIHOOD_ARM_TASK, args=[experiment_id, variant_id], queue="gpu", retry=False)
    except Exception:
        log.warning("could not queue the likelihood job of arm %s", variant_id, exc_info=True)


def revoke_jobs(*, task_ids: list[str]) -> None:
    """Ask the workers to drop these jobs; a job that starts anyway finds its experiment stopped."""
    try:
        app.control.revoke(task_ids)
    except Exception:
        log.warning("could not revoke jobs %s", task_ids, exc_info=True)


def claim_generations(*, experiment_id: int, variant_id: int, task_id: str) -> list[Generation]:
    """Claim and return what is still missing for one arm; rows under another job's live claim are skipped."""
    now = timezone.now()
    expired = now - timedelta(seconds=settings.JOB_TIME_LIMIT)
    claimable = Generation.objects.filter(
        experiment_id=experiment_id, variant_id=variant_id, status=Generation.Status.PENDING
    ).filter(Q(claimed_by="") | Q(claimed_by=task_id) | Q(claimed_at__lt=expired))
    with transaction.atomic():
        # Rows another job is claiming this instant are passed over rather than waited for; the UPDATE
        # repeats the condition, so on a database without row locks (SQLite) a claim won just before
        # is not overwritten either.
        ids = list(claimable.select_for_update(skip_locked=True).order_by("pk").values_list("pk", flat=True))
        claimable.filter(pk__in=ids).update(claimed_by=task_id, claimed_at=now, attempts=F("attempts") + 1)
    return list(
        Generation.objects.filter(pk__in=ids, claimed_by=task_id, status=Generation.Status.PENDING)
        .select_related("prompt__category")
        .order_by("prompt_id", "seed")
    )


def still_claimed(*, task_id: str, generation_ids: list[int]) -> set[int]:
    """Of these rows, those still pending and claimed by this job (not taken over, stored or cancelled)."""
    return set(
        Generation.objects.filter(
            pk__in=generation_ids, claimed_by=task_id, status=Generation.Status.PENDING
        ).values_list("pk", flat=True)
    )


def release_claims(*, generations: QuerySet[Generation]) -> None:
    """Free the pending rows of a queryset so the next job takes them at once."""
    generations.filter(status=Generation.Status.PENDING).exclude(claimed_by="").update(
        claimed_by="", claimed_at=None
    )


def store_results(
    *,
    experiment_id: int,
    results: list[Result],
    eos_token_ids: tuple[int, ...] = (),
    max_new_tokens: int | None = None,
    auto_depth: dict[int, dict] | None = None,
) -> int:
    """Store one batch of outputs with their automatic measures; a row already done is left as it is."""
    now = timezone.now()
    stored = 0
    references = measuring.references_for(generation_ids=[r.key for r in results])
    with transaction.atomic():
        for r in results:
            fields = dict(
                prompt_tokens=r.prompt_tokens,
                new_tokens=r.new_tokens,
                seconds=r.seconds,
                tokens_per_s=r.tokens_per_s,
                depth_k=r.depth_k,
                mean_active_experts=r.mean_active_experts,
                compute_experts=r.compute_experts_per_token,
                routing=r.routing,
                finished_at=now,
            )
            if auto_depth and r.key in auto_depth:
                fields["auto_depth"] = auto_depth[r.key]
            if r.error:
                fields.update(status=Generation.Status.FAILED, error=r.error)
            else:
                fields.update(status=Generation.Status.DONE, text=r.text, error="")
                fields.update(
                    measuring.output_fields(
                        text=r.text,
                        token_ids=r.token_ids,
                        eos_token_ids=eos_token_ids,
                        max_new_tokens=max_new_tokens,
                        reference=references.get(r.key),
                    )
                )
            stored += Generation.objects.filter(pk=r.key, status=Generation.Status.PENDING).update(**fields)
        ready = mark_ready_comparisons(experiment_id=experiment_id, generation_ids=[r.key for r in results])
    transaction.on_commit(lambda: events.experiment_changed(experiment_id, ready_comparisons=ready))
    return stored


def fail_generations(*, generation_ids: list[int], message: str) -> None:
    Generation.objects.filter(pk__in=generation_ids, status=Generation.Status.PENDING).update(
        status=Generation.Status.FAILED, error=message[:5000], finished_at=timezone.now()
    )


def mark_ready_comparisons(*, experiment_id: int, generation_ids: list[int]) -> int:
    """Comparisons become ready when both outputs exist; identical outputs are recorded, never shown."""
    candidates = list(
        Comparison.objects.filter(experiment_id=experiment_id, ready_at__isnull=True)
        .filter(Q(left_id__in=generation_ids) | Q(right_id__in=generation_ids))
        .filter(left__status=Generation.Status.DONE, right__status=Generation.Status.DONE)
        .values_list("pk", "gold_side", "left__text", "right__text")
    )
    now = timezone.now()
    different = 0
    for pk, gold_side, left_text, right_text in candidates:
        if gold_side:
            gold_text = degraded_copy(left_text, seed=pk)
            identical = gold_text == left_text
            Comparison.objects.filter(pk=pk).update(gold_text=gold_text, ready_at=now, is_identical=identical)
        else:
            identical = left_text == right_text
            Comparison.objects.filter(pk=pk).update(ready_at=now, is_identical=identical)
        different += not identical
    return different


def degraded_copy(text: str, *, seed: int) -> str:
    """A worse version of an output that looks like any other: same words, same length, same layout.

    Past its opening, one sentence is replaced by a repeat of the one before (its content lost, the length
    about the same), and in another stretch neighbouring words trade places, so that it stops reading well.
    Nothing is appended, shuffled wholesale or stuttered: a rater can tell it only by reading it.
    """
    rng = random.Random(seed)
    sentences = re.split(r"(?<=[.!?])(\s+)", text)  # sentences at even positions, their spacing between
    if len(sentences) >= 5:
        body = list(range(2, len(sentences), 2))
        # Repeat a sentence of the body, not the opening, where there is one to repeat.
        lost = rng.choice([i for i in body if i >= 4] or body)
        sentences[lost] = sentences[lost - 2]
        others = [i for i in body if i != lost] or [lost]
        garbled = rng.choice(others)
        sentences[garbled] = _swap_neighbours(sentences[garbled], rng, whole=True)
        degraded = "".join(sentences)
    else:
        degraded = _swap_neighbours(text, rng, whole=False)
    if degraded == text:
        degraded = _swap_neighbours(text, rng, whole=True)
    return degraded if degraded != text else text + " " + text.split()[-1] if text.split() else text


def _swap_neighbours(text: str, rng: random.Random, *, whole: bool) -> str:
    """Swap neighbouring words in a stretch (after the first third of the words unless ``whole``)."""
    parts = re.split(r"(\s+)", text)  # words at even positions, white space kept as it was
    words = list(range(0, len(parts), 2))
    words = [i for i in words if parts[i]]
    if len(words) < 2:
        return text
    start = 0 if whole else len(words) // 3
    stretch = words[start:][: max(2, len(words) // 4)]
    first = rng.randrange(0, 2) if len(stretch) > 2 else 0
    for a, b in zip(stretch[first::2], stretch[first + 1 :: 2], strict=False):
        parts[a], parts[b] = parts[b], parts[a]
    return "".join(parts)


def experiment_is_running(experiment_id: int) -> bool:
    return Experiment.objects.filter(pk=experiment_id, status=Experiment.Status.SCHEDULED).exists()


def job_started(*, task_id: str, worker: str) -> None:
    Job.objects.filter(task_id=task_id).update(
        status=Job.Status.RUNNING,
        worker=worker,
        started_at=timezone.now(),
        attempts=F("attempts") + 1,
        error="",
    )
    _job_event(task_id)


def job_progress(*, task_id: str, stored: int) -> None:
    Job.objects.filter(task_id=task_id).update(stored=stored)


def job_finished(*, task_id: str, stored: int, note: str = "") -> None:
    """Record the end of a job and free the rows it leaves unwritten (it stopped at a pause)."""
    release_claims(generations=Generation.objects.filter(claimed_by=task_id))
    Job.objects.filter(task_id=task_id).exclude(status=Job.Status.CANCELLED).update(
        status=Job.Status.DONE, stored=stored, error=note, finished_at=timezone.now()
    )
    _job_event(task_id)


def job_failed(*, task_id: str, error: str) -> None:
    """Record a failed attempt; its claims stay, for a retry under the same task id takes them back."""
    Job.objects.filter(task_id=task_id).update(
        status=Job.Status.FAILED, error=error[:5000], finished_at=timezone.now()
    )
    _job_event(task_id)


def _job_event(task_id: str) -> None:
    experiment_id = Job.objects.filter(task_id=task_id).values_list("experiment_id", flat=True).first()
    if experiment_id is not None:
        transaction.on_commit(lambda: events.experiment_changed(experiment_id, job=task_id))
