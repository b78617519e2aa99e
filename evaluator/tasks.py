"""Celery tasks: the only bridge between the job queue and the engine. Load ids, run the engine, store."""

import logging

from celery import shared_task
from django.conf import settings

from evaluator import services
from evaluator.engine.generate import Request, Sampling
from evaluator.engine.generate import generate_arm as engine_generate_arm
from evaluator.engine.loading import get_loaded
from evaluator.models import Experiment, Variant

log = logging.getLogger(__name__)


@shared_task(name="evaluator.tasks.generate_arm", acks_late=True, reject_on_worker_lost=True)
def generate_arm(experiment_id: int, variant_id: int) -> int:
    """Produce every missing output of one arm, a batch at a time. Returns how many were stored."""
    experiment = Experiment.objects.select_related("checkpoint").get(pk=experiment_id)
    if experiment.status not in {Experiment.Status.SCHEDULED}:
        log.info("experiment %s is %s: nothing to do", experiment_id, experiment.status)
        return 0
    variant = Variant.objects.get(pk=variant_id)
    rows = services.pending_generations(experiment_id=experiment_id, variant_id=variant_id)
    if not rows:
        return 0
    try:
        checkpoint = experiment.checkpoint
        dtype = settings.ENGINE_DTYPE if checkpoint.dtype == "auto" else checkpoint.dtype
        device = None if settings.ENGINE_DEVICE == "auto" else settings.ENGINE_DEVICE
        loaded = get_loaded(checkpoint.path, dtype=dtype, device=device)
        policy, context = variant.depth_policy, variant.context_config
        sampling = Sampling.from_dict(experiment.sampling or {})
    except Exception as exc:
        services.fail_generations(generation_ids=[g.pk for g in rows], message=f"{type(exc).__name__}: {exc}")
        raise
    stored = 0
    batch_size = settings.ENGINE_BATCH_SIZE
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
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
        try:
            results = engine_generate_arm(
                loaded,
                requests=requests,
                depth=policy,
                context=context,
                sampling=sampling,
                batch_size=batch_size,
            )
        except Exception as exc:
            log.exception("arm %s of experiment %s failed on a batch", variant_id, experiment_id)
            services.fail_generations(
                generation_ids=[g.pk for g in batch], message=f"{type(exc).__name__}: {exc}"
            )
            continue
        stored += services.store_results(experiment_id=experiment_id, results=results)
    return stored
