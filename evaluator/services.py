"""Writes of the evaluator: schedule experiments, claim and store generations, load demo data."""

import itertools
import json
import logging
import math
import random
import secrets
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from evaluator import events
from evaluator.engine.context import input_limit
from evaluator.engine.generate import Result, Sampling, prompt_token_counts
from evaluator.engine.loading import Architecture, inspect_checkpoint
from evaluator.models import Category, Checkpoint, Comparison, Experiment, Generation, Job, Prompt, Variant

log = logging.getLogger(__name__)

DEMO_PROMPTS = Path(__file__).resolve().parent / "demo_prompts.json"
DEMO_CATEGORIES = [
    ("routine", "Routine", "E-mails, templates and short requests: a good answer is short and correct."),
    ("dialogue", "Dialogue", "A conversation turn: helpful, on topic, natural."),
    ("philosophy", "Philosophy", "Reasoning about an argument: premises, objections, conclusions."),
    ("long_context", "Long context", "A long document, then a question that needs a fact from it."),
]


def validate_checkpoint(checkpoint: Checkpoint) -> Architecture:
    """Read the folder again and store what it says; raises CheckpointError with the reason it is refused."""
    arch = inspect_checkpoint(checkpoint.path)
    checkpoint.apply_architecture(arch.to_dict())
    checkpoint.save(update_fields=Checkpoint.ARCHITECTURE_FIELDS)
    return arch


class ScheduleError(Exception):
    """The experiment cannot be scheduled; `problems` lists what to fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class ScheduleReport:
    generations: int
    comparisons: int
    arms: int
    problems: list[str] = field(default_factory=list)


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def nominal_depth(depth: dict) -> float:
    """A number to order arms by depth: k for fixed, the default for maps, k_max for dynamic."""
    return float(depth.get("k") or depth.get("default") or depth.get("k_max") or 0)


def pairs_for(experiment: Experiment, variants: list[Variant]) -> list[tuple[Variant, Variant]]:
    """The arm pairs to compare, by the experiment's pairing rule."""
    if experiment.pairing == Experiment.Pairing.BASELINE:
        return [(experiment.baseline, v) for v in variants if v.pk != experiment.baseline_id]
    if experiment.pairing == Experiment.Pairing.ADJACENT:
        ordered = sorted(variants, key=lambda v: (nominal_depth(v.depth), v.pk))
        return list(itertools.pairwise(ordered))
    return list(itertools.combinations(variants, 2))


def experiment_problems(experiment: Experiment, variants: list[Variant], prompts: list[Prompt]) -> list[str]:
    """Everything that would make the experiment unfair or impossible to run, said so it can be fixed."""
    problems = []
    if len(variants) < 2:
        problems.append("Choose at least two arms to compare.")
    if not prompts:
        problems.append("Choose at least one prompt.")
    seeds = experiment.seeds
    if not seeds or not all(isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        problems.append("Seeds must be a non-empty list of distinct whole numbers, e.g. [0, 1].")
    for variant in variants:
        if variant.checkpoint_id != experiment.checkpoint_id:
            problems.append(f"Arm {variant.name!r} uses another checkpoint than the experiment.")
    if experiment.pairing == Experiment.Pairing.BASELINE and (
        experiment.baseline_id is None or experiment.baseline_id not in {v.pk for v in variants}
    ):
        problems.append("Pairing against a baseline needs a baseline that is one of the arms.")
    if experiment.raters_per_comparison < 1:
        problems.append("Raters per comparison must be at least 1.")
    try:
        Sampling.from_dict(experiment.sampling or {})
    except (TypeError, ValueError) as exc:
        problems.append(f"Sampling parameters: {exc}")
    if problems:
        return problems
    checkpoint = experiment.checkpoint
    if not checkpoint.architecture:
        return [f"Checkpoint {checkpoint.name!r} has not been validated: open it in the admin and save it."]
    arch = Architecture(**checkpoint.architecture)
    for variant in variants:
        try:
            variant.depth_policy.validate(arch.num_experts)
            variant.context_config.validate(arch)
        except ValueError as exc:
            problems.append(f"Arm {variant.name!r}: {exc}")
    if problems:
        return problems
    return prompts_over_limit(experiment, arch, variants, prompts)


def prompts_over_limit(
    experiment: Experiment, arch: Architecture, variants: list[Variant], prompts: list[Prompt]
) -> list[str]:
    """Prompts longer than an arm's input limit, by prompt, so nothing is cut silently later."""
    sampling = Sampling.from_dict(experiment.sampling or {})
    counts = prompt_token_counts(_tokenizer(experiment.checkpoint.path), [p.text for p in prompts])
    problems = []
    for variant in variants:
        limit = input_limit(arch, variant.context_config, sampling.max_new_tokens)
        for prompt, count in zip(prompts, counts, strict=True):
            if count > limit:
                problems.append(
                    f"Prompt {prompt.pk} ({prompt.category.slug}) has {count} tokens, over the {limit} "
                    f"that arm {variant.name!r} allows: shorten it, raise the input budget or use YaRN."
                )
    return problems


def schedule_experiment(*, experiment: Experiment) -> ScheduleReport:
    """Create every Generation and Comparison row in one transaction, then queue one job per arm.

    If the broker cannot take the jobs, the rows are removed again and the experiment stays a
    draft with the error, so scheduling later starts from a clean slate.
    """
    if experiment.status != Experiment.Status.DRAFT:
        raise ScheduleError(
            [f"The experiment is {experiment.status}, not a draft: it was scheduled already."]
        )
    variants = list(experiment.variants.select_related("checkpoint").order_by("pk"))
    prompts = list(experiment.prompts.select_related("category").order_by("pk"))
    problems = experiment_problems(experiment, variants, prompts)
    if problems:
        _record_schedule_error(experiment, problems)
        raise ScheduleError(problems)

    rng = secrets.SystemRandom()
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if locked.status != Experiment.Status.DRAFT:
            raise ScheduleError(
                [f"The experiment is {locked.status}, not a draft: it was scheduled already."]
            )
        generations = Generation.objects.bulk_create(
            Generation(experiment=experiment, variant=v, prompt=p, seed=s)
            for v in variants
            for p in prompts
            for s in experiment.seeds
        )
        by_key = {(g.variant_id, g.prompt_id, g.seed): g for g in generations}
        comparisons = []
        for a, b in pairs_for(experiment, variants):
            for p in prompts:
                for s in experiment.seeds:
                    first, second = by_key[(a.pk, p.pk, s)], by_key[(b.pk, p.pk, s)]
                    if rng.random() < 0.5:
                        first, second = second, first
                    comparisons.append(
                        Comparison(experiment=experiment, prompt=p, seed=s, left=first, right=second)
                    )
        comparisons += gold_comparisons(experiment, generations, len(comparisons), rng)
        Comparison.objects.bulk_create(comparisons)
        Experiment.objects.filter(pk=experiment.pk).update(
            status=Experiment.Status.SCHEDULED, scheduled_at=timezone.now(), schedule_error=""
        )
        variant_ids = [v.pk for v in variants]
        transaction.on_commit(lambda: _enqueue_or_unschedule(experiment.pk, variant_ids))
    experiment.refresh_from_db()
    return ScheduleReport(generations=len(generations), comparisons=len(comparisons), arms=len(variants))


def gold_comparisons(
    experiment: Experiment, generations: list[Generation], regular: int, rng: random.Random
) -> list[Comparison]:
    """Quality checks: an output against a degraded copy of itself, on a random side, unmarked in the page."""
    if experiment.gold_rate <= 0 or not generations:
        return []
    count = min(len(generations), math.ceil(experiment.gold_rate * regular))
    return [
        Comparison(
            experiment=experiment,
            prompt_id=g.prompt_id,
            seed=g.seed,
            left=g,
            right=g,
            gold_side=rng.choice(["left", "right"]),
        )
        for g in rng.sample(generations, count)
    ]


def degraded_copy(text: str, *, seed: int) -> str:
    """A clearly worse version of a text: its opening, then its words out of order and repeated."""
    words = text.split()
    if len(words) < 4:
        return (text + " " + text).strip() + " …"
    rng = random.Random(seed)
    keep = max(1, len(words) // 3)
    rest = words[keep:]
    rng.shuffle(rest)
    stutter = rest[: max(2, len(rest) // 4)]
    return " ".join(words[:keep] + stutter + stutter + rest)


def _record_schedule_error(experiment: Experiment, problems: list[str]) -> None:
    experiment.schedule_error = "\n".join(problems)
    experiment.save(update_fields=["schedule_error"])


def _enqueue_or_unschedule(experiment_id: int, variant_ids: list[int]) -> None:
    try:
        for variant_id in variant_ids:
            enqueue_arm(experiment_id=experiment_id, variant_id=variant_id)
    except Exception as exc:
        log.exception("queueing experiment %s failed", experiment_id)
        message = (
            f"The job queue could not be reached ({type(exc).__name__}: {exc}). "
            "Nothing was queued; schedule again."
        )
        with transaction.atomic():
            Comparison.objects.filter(experiment_id=experiment_id).delete()
            Generation.objects.filter(experiment_id=experiment_id).delete()
            Job.objects.filter(experiment_id=experiment_id).delete()
            Experiment.objects.filter(pk=experiment_id).update(
                status=Experiment.Status.DRAFT, scheduled_at=None, schedule_error=message
            )
        raise ScheduleError([message]) from exc


def enqueue_arm(*, experiment_id: int, variant_id: int) -> Job:
    """The one place that hands work to Celery: a Job row first, then the message with the same id."""
    from evaluator.tasks import generate_arm

    job = Job.objects.create(experiment_id=experiment_id, variant_id=variant_id, task_id=str(uuid.uuid4()))
    try:
        generate_arm.apply_async(
            args=[experiment_id, variant_id],
            task_id=job.task_id,
            queue="gpu",
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception:
        job.delete()
        raise
    return job


def pending_generations(*, experiment_id: int, variant_id: int) -> list[Generation]:
    """Lock and return what is still missing for one arm; rows another worker holds are skipped."""
    with transaction.atomic():
        rows = list(
            Generation.objects.select_for_update(skip_locked=True)
            .filter(experiment_id=experiment_id, variant_id=variant_id, status=Generation.Status.PENDING)
            .select_related("prompt__category")
            .order_by("prompt_id", "seed")
        )
        Generation.objects.filter(pk__in=[g.pk for g in rows]).update(attempts=F("attempts") + 1)
    return rows


def store_results(*, experiment_id: int, results: list[Result]) -> int:
    """Store one batch of outputs; a row already done (a redelivered job) is left as it is."""
    now = timezone.now()
    stored = 0
    with transaction.atomic():
        for r in results:
            fields = dict(
                prompt_tokens=r.prompt_tokens,
                new_tokens=r.new_tokens,
                seconds=r.seconds,
                tokens_per_s=r.tokens_per_s,
                depth_k=r.depth_k,
                mean_active_experts=r.mean_active_experts,
                routing=r.routing,
                finished_at=now,
            )
            if r.error:
                fields.update(status=Generation.Status.FAILED, error=r.error)
            else:
                fields.update(status=Generation.Status.DONE, text=r.text, error="")
            stored += Generation.objects.filter(pk=r.key, status=Generation.Status.PENDING).update(**fields)
        ready = mark_ready_comparisons(experiment_id=experiment_id, generation_ids=[r.key for r in results])
    transaction.on_commit(lambda: events.experiment_changed(experiment_id, ready_comparisons=ready))
    return stored


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
    Job.objects.filter(task_id=task_id).exclude(status=Job.Status.CANCELLED).update(
        status=Job.Status.DONE, stored=stored, error=note, finished_at=timezone.now()
    )
    _job_event(task_id)


def job_failed(*, task_id: str, error: str) -> None:
    Job.objects.filter(task_id=task_id).update(
        status=Job.Status.FAILED, error=error[:5000], finished_at=timezone.now()
    )
    _job_event(task_id)


def _job_event(task_id: str) -> None:
    experiment_id = Job.objects.filter(task_id=task_id).values_list("experiment_id", flat=True).first()
    if experiment_id is not None:
        transaction.on_commit(lambda: events.experiment_changed(experiment_id, job=task_id))


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
    identical, different = [], []
    for pk, gold_side, left_text, right_text in candidates:
        if gold_side:
            gold_text = degraded_copy(left_text, seed=pk)
            Comparison.objects.filter(pk=pk).update(
                gold_text=gold_text, ready_at=now, is_identical=gold_text == left_text
            )
            (identical if gold_text == left_text else different).append(pk)
        else:
            (identical if left_text == right_text else different).append(pk)
            Comparison.objects.filter(pk=pk).update(ready_at=now, is_identical=left_text == right_text)
    return len(different)


def pause_experiment(*, experiment: Experiment) -> None:
    """Stop handing out work: running jobs stop after their batch, raters get no new comparisons."""
    updated = Experiment.objects.filter(pk=experiment.pk, status=Experiment.Status.SCHEDULED).update(
        status=Experiment.Status.PAUSED
    )
    if not updated:
        raise ScheduleError([f"Only a scheduled experiment can be paused; this one is {experiment.status}."])
    transaction.on_commit(lambda: events.experiment_changed(experiment.pk, status="paused"))


def resume_experiment(*, experiment: Experiment) -> int:
    """Carry on: queue a job for every arm that still has outputs to write. Returns the jobs queued."""
    with transaction.atomic():
        updated = Experiment.objects.filter(pk=experiment.pk, status=Experiment.Status.PAUSED).update(
            status=Experiment.Status.SCHEDULED
        )
        if not updated:
            raise ScheduleError(
                [f"Only a paused experiment can be resumed; this one is {experiment.status}."]
            )
        variant_ids = sorted(
            set(
                Generation.objects.filter(
                    experiment=experiment, status=Generation.Status.PENDING
                ).values_list("variant_id", flat=True)
            )
        )
        Job.objects.filter(experiment=experiment, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).update(
            status=Job.Status.CANCELLED,
            finished_at=timezone.now(),
            error="superseded when the experiment resumed",
        )
        for variant_id in variant_ids:
            transaction.on_commit(lambda v=variant_id: enqueue_arm(experiment_id=experiment.pk, variant_id=v))
    return len(variant_ids)


def cancel_experiment(*, experiment: Experiment) -> int:
    """Stop for good: queued jobs are revoked, unwritten outputs marked cancelled. Returns jobs revoked."""
    from config.celery import app

    with transaction.atomic():
        Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.CANCELLED)
        Generation.objects.filter(experiment=experiment, status=Generation.Status.PENDING).update(
            status=Generation.Status.CANCELLED, finished_at=timezone.now()
        )
        jobs = list(
            Job.objects.filter(
                experiment=experiment, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]
            ).values_list("task_id", flat=True)
        )
        Job.objects.filter(task_id__in=jobs).update(status=Job.Status.CANCELLED, finished_at=timezone.now())

        def revoke() -> None:
            try:
                app.control.revoke(jobs)
            except Exception:
                # A job that still starts finds the experiment cancelled and stops at once.
                log.warning("could not revoke the jobs of experiment %s", experiment.pk, exc_info=True)

        if jobs:
            transaction.on_commit(revoke)
        transaction.on_commit(lambda: events.experiment_changed(experiment.pk, status="cancelled"))
    return len(jobs)


def retry_failed(*, experiment: Experiment) -> int:
    """Put failed generations back in the queue; done ones are never redone."""
    with transaction.atomic():
        failed = Generation.objects.filter(experiment=experiment, status=Generation.Status.FAILED)
        variant_ids = sorted(set(failed.values_list("variant_id", flat=True)))
        count = failed.update(status=Generation.Status.PENDING, error="")
        for variant_id in variant_ids:
            transaction.on_commit(lambda v=variant_id: enqueue_arm(experiment_id=experiment.pk, variant_id=v))
    return count


def ensure_demo_data(*, checkpoint_path: Path) -> Experiment:
    """Create the demo categories, prompts, arms at depth 1, 2, 4 and 8, and a draft experiment."""
    with transaction.atomic():
        categories = {}
        for order, (slug, name, description) in enumerate(DEMO_CATEGORIES):
            categories[slug], _ = Category.objects.get_or_create(
                slug=slug, defaults={"name": name, "description": description, "order": order}
            )
        for item in json.loads(DEMO_PROMPTS.read_text()):
            Prompt.objects.get_or_create(
                category=categories[item["category"]],
                text=item["text"],
                defaults={"tags": item.get("tags", [])},
            )
        checkpoint = Checkpoint.objects.filter(name="tiny-moe").first()
        if checkpoint is None:
            checkpoint = Checkpoint(name="tiny-moe", path=str(checkpoint_path))
            checkpoint.full_clean()
            checkpoint.save()
        variants = []
        for k in (1, 2, 4, 8):
            variant, _ = Variant.objects.get_or_create(
                checkpoint=checkpoint,
                name=f"tiny k={k}",
                defaults={"depth": {"kind": "fixed", "k": k}, "context": {"kind": "native"}},
            )
            variants.append(variant)
        experiment, created = Experiment.objects.get_or_create(
            name="Demo: expert depth 1 / 2 / 4 / 8",
            defaults={
                "checkpoint": checkpoint,
                "seeds": [0],
                "sampling": {"max_new_tokens": 48, "do_sample": True, "temperature": 0.8, "top_p": 0.95},
                "guidelines": "Pick the output that continues the text better for its task. "
                "Short and right beats long and wandering.",
            },
        )
        if created:
            experiment.variants.set(variants)
            experiment.prompts.set(Prompt.objects.filter(category__in=categories.values()))
    return experiment


def requeue_unfinished(*, experiment: Experiment) -> int:
    """Queue a job again for every arm that still has outputs to write and no job visibly working on it.

    For jobs lost outside the service: a broker restarted without its queue, a whole worker host gone, a
    queueing that failed half-way. A job running on a worker that still sends heartbeats is left alone;
    other queued or running jobs of those arms are marked superseded. Running an arm twice writes nothing
    twice. Returns the jobs queued.
    """
    from evaluator.heartbeat import OFFLINE_AFTER
    from evaluator.models import WorkerStatus

    if experiment.status != Experiment.Status.SCHEDULED:
        raise ScheduleError(
            [f"Only a scheduled experiment has jobs to queue again; this one is {experiment.status}."]
        )
    online = set(
        WorkerStatus.objects.filter(last_seen__gte=timezone.now() - OFFLINE_AFTER).values_list(
            "hostname", flat=True
        )
    )
    with transaction.atomic():
        pending = set(
            Generation.objects.filter(experiment=experiment, status=Generation.Status.PENDING).values_list(
                "variant_id", flat=True
            )
        )
        busy = set(
            Job.objects.filter(
                experiment=experiment, status=Job.Status.RUNNING, worker__in=online
            ).values_list("variant_id", flat=True)
        )
        variant_ids = sorted(pending - busy)
        Job.objects.filter(
            experiment=experiment,
            variant_id__in=variant_ids,
            status__in=[Job.Status.QUEUED, Job.Status.RUNNING],
        ).update(status=Job.Status.CANCELLED, finished_at=timezone.now(), error="superseded: queued again")
        for variant_id in variant_ids:
            transaction.on_commit(lambda v=variant_id: enqueue_arm(experiment_id=experiment.pk, variant_id=v))
    return len(variant_ids)
