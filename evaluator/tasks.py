"""Celery tasks: the only bridge between the job queue and the engine. Load ids, run the engine, store."""

import itertools
import logging
import uuid
from dataclasses import replace

from celery import shared_task
from django.conf import settings
from django.db import OperationalError, close_old_connections, connection

from evaluator import jobs, measuring
from evaluator.engine.depth import DepthPolicy
from evaluator.engine.generate import Request, Sampling
from evaluator.engine.generate import generate_arm as engine_generate_arm
from evaluator.engine.likelihood import score_texts
from evaluator.engine.loading import get_loaded
from evaluator.engine.router import auto_requests, decide
from evaluator.models import Experiment, Variant

log = logging.getLogger(__name__)


@shared_task(bind=True, name="evaluator.tasks.generate_arm", acks_late=True, reject_on_worker_lost=True)
def generate_arm(self, experiment_id: int, variant_id: int) -> int:
    """Produce every missing output of one arm, a batch at a time. Returns how many were stored.

    Safe to run twice: the job claims the arm's pending rows, generates only those it still holds and
    stores a row once. Between batches it looks at the experiment again, so pausing or cancelling stops
    it at the next batch.
    """
    # Called in-process (a test, a command) there is no message, so the claim gets an id of its own.
    task_id = self.request.id or f"local-{uuid.uuid4()}"
    experiment = Experiment.objects.select_related("checkpoint").filter(pk=experiment_id).first()
    if experiment is None:  # deleted while its message waited in the queue: nothing left to do
        log.info("experiment %s no longer exists; job %s has nothing to do", experiment_id, task_id)
        return 0
    if experiment.status != Experiment.Status.SCHEDULED:
        jobs.job_finished(task_id=task_id, stored=0, note=f"experiment is {experiment.status}")
        return 0
    jobs.job_started(task_id=task_id, worker=self.request.hostname or "")
    variant = Variant.objects.get(pk=variant_id)
    rows = jobs.claim_generations(experiment_id=experiment_id, variant_id=variant_id, task_id=task_id)
    try:
        checkpoint = experiment.checkpoint
        dtype = settings.ENGINE_DTYPE if checkpoint.dtype == "auto" else checkpoint.dtype
        device = None if settings.ENGINE_DEVICE == "auto" else settings.ENGINE_DEVICE
        if settings.ENGINE_CPU_THREADS:
            import torch  # here, in the worker child: the web process and the worker parent never load torch

            torch.set_num_threads(settings.ENGINE_CPU_THREADS)
        loaded = get_loaded(checkpoint.path, dtype=dtype, device=device) if rows else None
        policy, context = variant.depth_policy, variant.context_config
        sampling = Sampling.from_dict(experiment.sampling or {})
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        jobs.fail_generations(generation_ids=[g.pk for g in rows], message=message)
        jobs.job_failed(task_id=task_id, error=message)
        raise
    stored = 0
    batch_size = settings.ENGINE_BATCH_SIZE
    for batch in chunks_by_prompt(rows, batch_size):
        # A long job outlives database restarts: drop a broken connection before each batch (not
        # inside a caller's transaction, as when a test or a command runs the task in-process).
        if not connection.in_atomic_block:
            close_old_connections()
        if not jobs.experiment_is_running(experiment_id):
            break
        # A job superseded (the arm queued again) or presumed dead leaves the rest to the new holder.
        held = jobs.still_claimed(task_id=task_id, generation_ids=[g.pk for g in batch])
        batch = [g for g in batch if g.pk in held]
        if not batch:
            continue
        requests = [
            Request(
                key=g.pk,
                prompt=g.prompt.text,
                seed=g.seed,
                category=g.prompt.category.slug,
                tags=tuple(g.prompt.tags or ()),
            )
            for g in batch
        ]
        # An auto policy places each prompt by its text first; the decision is stored with the output.
        run_policy, requests, auto_depth = _resolve_auto(policy, requests)
        try:
            results = engine_generate_arm(
                loaded,
                requests=requests,
                depth=run_policy,
                context=context,
                sampling=sampling,
                batch_size=batch_size,
            )
        except Exception as exc:
            log.exception("arm %s of experiment %s failed on a batch", variant_id, experiment_id)
            jobs.fail_generations(
                generation_ids=[g.pk for g in batch], message=f"{type(exc).__name__}: {exc}"
            )
            continue
        try:
            stored += jobs.store_results(
                experiment_id=experiment_id,
                results=results,
                eos_token_ids=tuple(loaded.eos_token_ids),
                max_new_tokens=sampling.max_new_tokens,
                auto_depth=auto_depth,
            )
        except OperationalError:
            # The outputs of this batch are lost with the connection; they are still pending, and a
            # retry of the job (the same task, later) writes them.
            if not connection.in_atomic_block:
                close_old_connections()
            jobs.job_failed(task_id=task_id, error="the database went away while storing; retrying")
            raise self.retry(countdown=5, max_retries=5) from None
        jobs.job_progress(task_id=task_id, stored=stored)
    jobs.job_finished(task_id=task_id, stored=stored)
    return stored


def chunks_by_prompt(rows: list, size: int) -> list[list]:
    """`rows` in chunks of about `size`, cut only between prompts: the engine shares one generation
    among a prompt's greedy seeds only within a call."""
    chunks: list[list] = []
    for _, group in itertools.groupby(rows, key=lambda g: g.prompt_id):
        group = list(group)
        if chunks and len(chunks[-1]) + len(group) <= size:
            chunks[-1].extend(group)
        else:
            chunks.append(group)
    return chunks


def _resolve_auto(policy: DepthPolicy, requests: list) -> tuple[DepthPolicy, list, dict[int, dict] | None]:
    if policy.kind != "auto":
        return policy, requests, None
    run_policy, labelled, decisions = auto_requests(policy, requests)
    return run_policy, labelled, {r.key: d.to_dict() for r, d in zip(requests, decisions, strict=True)}


@shared_task(bind=True, name="evaluator.tasks.likelihood_arm", acks_late=True, reject_on_worker_lost=True)
def likelihood_arm(self, experiment_id: int, variant_id: int) -> int:
    """Score the experiment's prompts (and reference answers) by teacher-forced likelihood under one arm.

    Runs after the arm's generation job on the same queue; writes only what is missing, so running it twice
    writes nothing twice. Returns how many prompts it scored.
    """
    experiment = Experiment.objects.select_related("checkpoint").filter(pk=experiment_id).first()
    if experiment is None or experiment.status not in (Experiment.Status.SCHEDULED, Experiment.Status.DONE):
        return 0
    texts = measuring.missing_likelihood_texts(experiment=experiment, variant_id=variant_id)
    if not texts:
        return 0
    variant = Variant.objects.get(pk=variant_id)
    checkpoint = experiment.checkpoint
    dtype = settings.ENGINE_DTYPE if checkpoint.dtype == "auto" else checkpoint.dtype
    device = None if settings.ENGINE_DEVICE == "auto" else settings.ENGINE_DEVICE
    loaded = get_loaded(checkpoint.path, dtype=dtype, device=device)
    policy = variant.depth_policy
    if policy.kind == "auto":
        mapping = dict(policy.mapping)
        placed = [decide(policy.router, mapping, policy.default, t.prefix) for t in texts]
        texts = [replace(t, category=d.category or "", tags=()) for t, d in zip(texts, placed, strict=True)]
        policy = DepthPolicy.by_category(mapping, policy.default)
    scored = score_texts(
        loaded,
        texts=texts,
        depth=policy,
        context=variant.context_config,
        batch_size=settings.ENGINE_BATCH_SIZE,
    )
    return measuring.store_likelihoods(experiment_id=experiment_id, variant_id=variant_id, scored=scored)
