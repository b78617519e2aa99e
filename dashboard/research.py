"""Reads for the researcher's staff pages: every arm's output per prompt side by side, and flagged
comparisons waiting for a decision."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from dashboard.analysis import Arm, experiment_arms
from dashboard.models import Lease, Rating
from evaluator.models import Category, Comparison, Experiment, Generation, Prompt

OUTPUTS_PER_PAGE = 10
FLAGS_PER_PAGE = 20
IDENTICAL_CHOICES = {"": "any", "yes": "all arms wrote the same text", "no": "arms wrote different texts"}
FLAG_STATES = {"open": "waiting for a decision", "reviewed": "decided", "all": "all"}


# --------------------------------------------------------------------------- the output browser


@dataclass(frozen=True)
class OutputFilters:
    """Which prompts the output browser lists: a category, identical or differing outputs, flagged
    ones, or those where one arm lost at least one decisive vote."""

    category: str = ""
    identical: str = ""
    flagged: bool = False
    lost: int | None = None  # an arm's (variant's) id

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> OutputFilters:
        identical = query.get("identical", "")
        lost = query.get("lost", "")
        return cls(
            category=query.get("category", ""),
            identical=identical if identical in IDENTICAL_CHOICES else "",
            flagged=query.get("flagged", "") == "1",
            lost=int(lost) if lost.isdigit() else None,
        )

    def query_items(self) -> list[tuple[str, str]]:
        items = [("category", self.category), ("identical", self.identical)]
        items += [("flagged", "1" if self.flagged else ""), ("lost", str(self.lost or ""))]
        return [(name, value) for name, value in items if value]


@dataclass(frozen=True)
class ArmOutput:
    """One arm's output for a prompt and seed (None while the arm has none), and its decisive votes there."""

    arm: Arm
    output: Generation | None
    won: int = 0
    lost: int = 0

    @property
    def routing(self) -> dict[str, Any]:
        return (self.output.routing or {}) if self.output else {}

    @property
    def active_per_layer(self) -> str:
        values = self.routing.get("mean_active_experts_per_layer") or []
        return " · ".join(f"{value:.2f}" for value in values)


@dataclass(frozen=True)
class PromptOutputs:
    prompt: Prompt
    seed: int
    outputs: list[ArmOutput]  # in arm order, shallowest first
    identical: bool
    flags: int


@dataclass(frozen=True)
class OutputBrowser:
    arms: list[Arm]
    categories: list[Category]
    page: Page
    rows: list[PromptOutputs]


def _decisive_losses(experiment: Experiment, arm_id: int) -> QuerySet[Rating]:
    """Preference votes (no gold checks) in which the arm was shown and the other side won."""
    return Rating.objects.filter(comparison__experiment=experiment, comparison__gold_side="").filter(
        Q(verdict=Rating.Verdict.LEFT, comparison__right__variant_id=arm_id)
        | Q(verdict=Rating.Verdict.RIGHT, comparison__left__variant_id=arm_id)
    )


def output_browser(
    *, experiment: Experiment, filters: OutputFilters, page_number: str | int | None = 1
) -> OutputBrowser:
    """A page of (prompt, seed) rows with every arm's output, cost, routing and votes, filtered."""
    arms = experiment_arms(experiment)
    categories = list(
        Category.objects.filter(prompts__generations__experiment=experiment)
        .distinct()
        .order_by("order", "slug")
    )
    outputs = Generation.objects.filter(experiment=experiment)
    if filters.category:
        outputs = outputs.filter(prompt__category__slug=filters.category)
    if filters.flagged:
        flagged = Comparison.objects.filter(
            experiment=experiment, prompt_id=OuterRef("prompt_id"), seed=OuterRef("seed"), flag_count__gt=0
        )
        outputs = outputs.filter(Exists(flagged))
    if filters.lost is not None:
        losses = _decisive_losses(experiment, filters.lost).filter(
            comparison__prompt_id=OuterRef("prompt_id"), comparison__seed=OuterRef("seed")
        )
        outputs = outputs.filter(Exists(losses))
    done = Q(status=Generation.Status.DONE)
    keys = (
        outputs.values("prompt_id", "seed")
        .annotate(
            n=Count("pk"), done=Count("pk", filter=done), texts=Count("text", distinct=True, filter=done)
        )
        .order_by("prompt__category__order", "prompt__category__slug", "prompt_id", "seed")
    )
    if filters.identical == "yes":
        keys = keys.filter(n__gte=2, done=F("n"), texts=1)
    elif filters.identical == "no":
        keys = keys.filter(texts__gt=1)
    page = Paginator(keys, OUTPUTS_PER_PAGE).get_page(page_number)
    return OutputBrowser(
        arms=arms, categories=categories, page=page, rows=_prompt_rows(experiment, arms, page)
    )


def _prompt_rows(experiment: Experiment, arms: list[Arm], keys: Iterable[dict]) -> list[PromptOutputs]:
    keys = [(key["prompt_id"], key["seed"]) for key in keys]
    if not keys:
        return []
    wanted = Q()
    for prompt_id, seed in keys:
        wanted |= Q(prompt_id=prompt_id, seed=seed)
    outputs: dict[tuple[int, int], dict[int, Generation]] = defaultdict(dict)
    prompts: dict[int, Prompt] = {}
    for output in Generation.objects.filter(wanted, experiment=experiment).select_related("prompt__category"):
        outputs[(output.prompt_id, output.seed)][output.variant_id] = output
        prompts[output.prompt_id] = output.prompt
    flags = {
        (row["prompt_id"], row["seed"]): row["flags"]
        for row in Comparison.objects.filter(wanted, experiment=experiment)
        .values("prompt_id", "seed")
        .annotate(flags=Coalesce(Sum("flag_count"), 0))
        .order_by()
    }
    won: dict[tuple[int, int, int], int] = defaultdict(int)
    lost: dict[tuple[int, int, int], int] = defaultdict(int)
    votes = Rating.objects.filter(
        comparison__in=Comparison.objects.filter(wanted, experiment=experiment, gold_side=""),
        verdict__in=[Rating.Verdict.LEFT, Rating.Verdict.RIGHT],
    ).values_list(
        "verdict",
        "comparison__prompt_id",
        "comparison__seed",
        "comparison__left__variant_id",
        "comparison__right__variant_id",
    )
    for verdict, prompt_id, seed, left, right in votes:
        winner, loser = (left, right) if verdict == Rating.Verdict.LEFT else (right, left)
        won[(prompt_id, seed, winner)] += 1
        lost[(prompt_id, seed, loser)] += 1
    rows = []
    for prompt_id, seed in keys:
        by_arm = outputs[(prompt_id, seed)]
        texts = {o.text for o in by_arm.values() if o.status == Generation.Status.DONE}
        complete = len(by_arm) >= 2 and all(o.status == Generation.Status.DONE for o in by_arm.values())
        rows.append(
            PromptOutputs(
                prompt=prompts[prompt_id],
                seed=seed,
                outputs=[
                    ArmOutput(
                        arm=arm,
                        output=by_arm.get(arm.pk),
                        won=won[(prompt_id, seed, arm.pk)],
                        lost=lost[(prompt_id, seed, arm.pk)],
                    )
                    for arm in arms
                    if arm.pk in by_arm
                ],
                identical=complete and len(texts) == 1,
                flags=flags.get((prompt_id, seed), 0),
            )
        )
    return rows


# --------------------------------------------------------------------------- the flag queue


@dataclass(frozen=True)
class FlagReason:
    reason: str
    flagged_at: Any


@dataclass(frozen=True)
class FlaggedComparison:
    """A flagged comparison as the reviewer sees it: blind (sides A and B, as raters saw them), with the
    raters' reasons and the decision so far."""

    comparison: Comparison
    reasons: list[FlagReason] = field(default_factory=list)

    @property
    def decision_label(self) -> str:
        return self.comparison.get_flag_decision_display()


def _flagged(*, state: str, experiment_id: int | None) -> QuerySet[Comparison]:
    comparisons = Comparison.objects.filter(flag_count__gt=0)
    if experiment_id is not None:
        comparisons = comparisons.filter(experiment_id=experiment_id)
    if state == "open":
        comparisons = comparisons.filter(flag_decision="")
    elif state == "reviewed":
        comparisons = comparisons.exclude(flag_decision="")
    return comparisons.select_related(
        "experiment", "prompt__category", "left", "right", "flag_reviewed_by"
    ).order_by("-flag_count", "pk")


def flag_queue(
    *, state: str = "open", experiment_id: int | None = None, page_number: str | int | None = 1
) -> Page:
    """A page of flagged comparisons, most-flagged first; its object_list holds FlaggedComparison."""
    page = Paginator(_flagged(state=state, experiment_id=experiment_id), FLAGS_PER_PAGE).get_page(page_number)
    page.object_list = _with_reasons(list(page.object_list))
    return page


def flagged_comparison(*, comparison_id: int) -> FlaggedComparison | None:
    comparison = _flagged(state="all", experiment_id=None).filter(pk=comparison_id).first()
    return _with_reasons([comparison])[0] if comparison else None


def flag_counts(*, experiment_id: int | None = None) -> dict[str, int]:
    """Flagged comparisons waiting for a decision and decided."""
    comparisons = Comparison.objects.filter(flag_count__gt=0)
    if experiment_id is not None:
        comparisons = comparisons.filter(experiment_id=experiment_id)
    return comparisons.aggregate(
        open=Count("pk", filter=Q(flag_decision="")), reviewed=Count("pk", filter=~Q(flag_decision=""))
    )


def _with_reasons(comparisons: list[Comparison]) -> list[FlaggedComparison]:
    reasons: dict[int, list[FlagReason]] = defaultdict(list)
    leases = (
        Lease.objects.filter(comparison__in=comparisons)
        .exclude(flag_reason="")
        .order_by("completed_at", "pk")
        .values_list("comparison_id", "flag_reason", "completed_at")
    )
    for comparison_id, reason, flagged_at in leases:
        reasons[comparison_id].append(FlagReason(reason=reason, flagged_at=flagged_at))
    return [FlaggedComparison(comparison=c, reasons=reasons[c.pk]) for c in comparisons]


def flag_experiments() -> QuerySet[Experiment]:
    """Experiments with flagged comparisons, for the queue's filter."""
    return Experiment.objects.filter(comparisons__flag_count__gt=0).distinct().order_by("name")
