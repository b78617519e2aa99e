"""Scheduling experiments: checks before anything runs, rows in one transaction, jobs on commit, and
moving a scheduled experiment on (pause, resume, cancel, retry, queue again)."""

import itertools
import logging
import math
import random
import secrets
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import lru_cache

from django.db import transaction
from django.utils import timezone

from evaluator import events, jobs
from evaluator.engine.context import input_limit
from evaluator.engine.generate import Sampling, prompt_token_counts
from evaluator.engine.loading import Architecture, inspect_checkpoint
from evaluator.heartbeat import OFFLINE_AFTER
from evaluator.models import (
    Checkpoint,
    Comparison,
    Experiment,
    Generation,
    Job,
    Prompt,
    Variant,
    WorkerStatus,
)

log = logging.getLogger(__name__)

MAX_SEED = 2**31 - 1  # Generation.seed is a 32-bit integer column


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
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        problems.append("Seeds must be a non-empty list of distinct whole numbers, e.g. [0, 1].")
    elif not all(0 <= s <= MAX_SEED for s in seeds):
        problems.append(f"Seeds must be whole numbers from 0 to {MAX_SEED:,}.")
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
        comparisons, strata = [], []
        for a, b in pairs_for(experiment, variants):
            for p in prompts:
                for s in experiment.seeds:
                    first, second = by_key[(a.pk, p.pk, s)], by_key[(b.pk, p.pk, s)]
                    if rng.random() < 0.5:
                        first, second = second, first
                    comparisons.append(
                        Comparison(experiment=experiment, prompt=p, seed=s, left=first, right=second)
                    )
                    strata.append((a.pk, b.pk, p.category_id))
        gold = gold_comparisons(experiment, generations, len(comparisons), rng)
        comparisons += gold
        strata += ["gold"] * len(gold)
        checks = qualification_checks(experiment, generations, {c.left_id for c in gold}, rng)
        comparisons += checks
        strata += ["qualification"] * len(checks)
        for comparison, key in zip(comparisons, hand_out_keys(strata, rng), strict=True):
            comparison.order_key = key
        Comparison.objects.bulk_create(comparisons)
        Experiment.objects.filter(pk=experiment.pk).update(
            status=Experiment.Status.SCHEDULED, scheduled_at=timezone.now(), schedule_error=""
        )
        variant_ids = [v.pk for v in variants]
        transaction.on_commit(lambda: _enqueue_or_unschedule(experiment.pk, variant_ids))
    experiment.refresh_from_db()
    return ScheduleReport(generations=len(generations), comparisons=len(comparisons), arms=len(variants))


def hand_out_keys(strata: list[Hashable], rng: random.Random) -> list[float]:
    """A random place in the hand-out order for each item, balanced across strata in every prefix.

    Within a stratum of n items, shuffled, the i-th gets a key in [i/n, (i+1)/n): whatever number of
    comparisons has been handed out, each stratum (a pair of arms in a category) has had its share
    within one, and the order still names no arm.
    """
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, stratum in enumerate(strata):
        members[stratum].append(index)
    keys = [0.0] * len(strata)
    for indices in members.values():
        rng.shuffle(indices)
        for i, index in enumerate(indices):
            keys[index] = (i + rng.random()) / len(indices)
    return keys


def gold_comparisons(
    experiment: Experiment, generations: list[Generation], regular: int, rng: random.Random
) -> list[Comparison]:
    """Quality checks: an output against a degraded copy of itself, on a random side, unmarked in the page."""
    if experiment.gold_rate <= 0 or not generations:
        return []
    count = min(len(generations), math.ceil(experiment.gold_rate * regular))
    return [_gold_check(experiment, g, rng) for g in rng.sample(generations, count)]


def _gold_check(
    experiment: Experiment, output: Generation, rng: random.Random, *, qualification: bool = False
) -> Comparison:
    """An output against a degraded copy of itself (made when the output is stored), on a random side."""
    return Comparison(
        experiment=experiment,
        prompt_id=output.prompt_id,
        seed=output.seed,
        left=output,
        right=output,
        gold_side=rng.choice(["left", "right"]),
        qualification=qualification,
    )


def qualification_checks(
    experiment: Experiment, generations: list[Generation], taken: set[int], rng: random.Random
) -> list[Comparison]:
    """The qualification round (dashboard.qualification): gold checks built like the others, on outputs no
    other gold check uses, of as many different prompts as there are checks."""
    available = [g for g in generations if g.pk not in taken]
    rng.shuffle(available)
    # One output per prompt first, then the rest: checks on different prompts say more about a rater.
    firsts, rest, seen = [], [], set()
    for g in available:
        (rest if g.prompt_id in seen else firsts).append(g)
        seen.add(g.prompt_id)
    chosen = (firsts + rest)[: experiment.qualification_items]
    return [_gold_check(experiment, g, rng, qualification=True) for g in chosen]


def _record_schedule_error(experiment: Experiment, problems: list[str]) -> None:
    experiment.schedule_error = "\n".join(problems)
    experiment.save(update_fields=["schedule_error"])


def _enqueue_or_unschedule(experiment_id: int, variant_ids: list[int]) -> None:
    try:
        for variant_id in variant_ids:
            jobs.enqueue_arm(experiment_id=experiment_id, variant_id=variant_id)
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
        jobs.release_claims(generations=Generation.objects.filter(experiment=experiment))
        for variant_id in variant_ids:
            transaction.on_commit(
                lambda v=variant_id: jobs.enqueue_arm(experiment_id=experiment.pk, variant_id=v)
            )
    return len(variant_ids)


def cancel_experiment(*, experiment: Experiment) -> int:
    """Stop for good: queued jobs are revoked, unwritten outputs marked cancelled. Returns jobs revoked."""
    with transaction.atomic():
        Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.CANCELLED)
        Generation.objects.filter(experiment=experiment, status=Generation.Status.PENDING).update(
            status=Generation.Status.CANCELLED, finished_at=timezone.now()
        )
        task_ids = list(
            Job.objects.filter(
                experiment=experiment, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]
            ).values_list("task_id", flat=True)
        )
        Job.objects.filter(task_id__in=task_ids).update(
            status=Job.Status.CANCELLED, finished_at=timezone.now()
        )
        if task_ids:
            transaction.on_commit(lambda: jobs.revoke_jobs(task_ids=task_ids))
        transaction.on_commit(lambda: events.experiment_changed(experiment.pk, status="cancelled"))
    return len(task_ids)


def retry_failed(*, experiment: Experiment) -> int:
    """Put failed generations back in the queue; done ones are never redone."""
    with transaction.atomic():
        failed = Generation.objects.filter(experiment=experiment, status=Generation.Status.FAILED)
        variant_ids = sorted(set(failed.values_list("variant_id", flat=True)))
        count = failed.update(status=Generation.Status.PENDING, error="", claimed_by="", claimed_at=None)
        for variant_id in variant_ids:
            transaction.on_commit(
                lambda v=variant_id: jobs.enqueue_arm(experiment_id=experiment.pk, variant_id=v)
            )
    return count


def requeue_unfinished(*, experiment: Experiment) -> int:
    """Queue a job again for every arm that still has outputs to write and no job visibly working on it.

    For jobs lost outside the service: a broker restarted without its queue, a whole worker host gone, a
    queueing that failed half-way. A job running on a worker that still sends heartbeats is left alone;
    other queued or running jobs of those arms are marked superseded. Running an arm twice writes nothing
    twice. Returns the jobs queued.
    """
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
        jobs.release_claims(
            generations=Generation.objects.filter(experiment=experiment, variant_id__in=variant_ids)
        )
        for variant_id in variant_ids:
            transaction.on_commit(
                lambda v=variant_id: jobs.enqueue_arm(experiment_id=experiment.pk, variant_id=v)
            )
    return len(variant_ids)
