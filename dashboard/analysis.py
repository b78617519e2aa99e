"""Turn an experiment's ratings and outputs into its results: preferences per category, certainty, cost.

The database rows become the arrays of ``dashboard.stats`` (its module docstring has the convention);
``stats.summarize`` does the statistics. Around it this module adds what only the database knows: which
votes to exclude and why, the cost of each arm (tokens/s, experts per token actually used) and the
routing of its outputs, summed per arm and category for the heatmaps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db.models import Avg, Count, F, FloatField, IntegerField, Max, Min, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.http import QueryDict

from dashboard import stats
from dashboard.models import Rating
from dashboard.selectors import rater_pseudonym
from evaluator.models import Category, Comparison, Experiment, Generation, Variant
from evaluator.routing import RoutingTotals as Routing
from evaluator.routing import routing_totals
from evaluator.scheduling import nominal_depth

OUTCOMES = {
    Rating.Verdict.LEFT: stats.LEFT,
    Rating.Verdict.RIGHT: stats.RIGHT,
    Rating.Verdict.TIE: stats.TIE,
    Rating.Verdict.BOTH_BAD: stats.BOTH_BAD,
}
REASONS = {
    "gold_failed": "votes of raters who failed gold checks",
    "too_fast": "votes faster than the experiment's minimum",
    "flagged": "votes on comparisons a rater flagged",
}
OVERALL = "overall"


def gold_min_accuracy() -> float:
    return float(getattr(settings, "GOLD_MIN_ACCURACY", 0.7))


def gold_min_seen() -> int:
    return int(getattr(settings, "GOLD_MIN_SEEN", 3))


def bootstrap_rounds() -> int:
    return int(getattr(settings, "RESULTS_BOOTSTRAP_ROUNDS", 1000))


def poll_seconds() -> int:
    """How often an open results page re-fetches its live part when no WebSocket event comes."""
    return int(getattr(settings, "RESULTS_POLL_SECONDS", 15))


# --------------------------------------------------------------------------- options from the page


@dataclass(frozen=True)
class Exclusions:
    """Which votes the results leave out. Defaults: failed-gold raters and flagged comparisons."""

    gold_failed: bool = True
    too_fast: bool = False
    flagged: bool = True

    @classmethod
    def from_query(cls, query: QueryDict) -> Exclusions:
        """``?exclusions=chosen&exclude=flagged…`` from the page's form; without the marker, the defaults."""
        if "exclusions" not in query:
            return cls()
        chosen = set(query.getlist("exclude"))
        return cls(**{reason: reason in chosen for reason in REASONS})

    def query_items(self) -> list[tuple[str, str]]:
        if self == Exclusions():
            return []
        return [("exclusions", "chosen")] + [("exclude", r) for r in REASONS if getattr(self, r)]

    def as_kwargs(self) -> dict[str, bool]:
        return {f"exclude_{reason}": getattr(self, reason) for reason in REASONS}


# --------------------------------------------------------------------------- arms and categories


@dataclass(frozen=True)
class Arm:
    index: int
    pk: int
    name: str
    depth: str
    context: str

    @property
    def descriptor(self) -> str:
        return f"{self.depth}, {self.context}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.descriptor})"


def experiment_arms(experiment: Experiment) -> list[Arm]:
    """The experiment's arms, shallowest first: the order of every table and chart."""
    # Arms taken off the experiment after it ran still have outputs and votes: they stay in the results.
    in_use = Generation.objects.filter(experiment=experiment).values("variant_id")
    found = Variant.objects.filter(Q(experiments=experiment) | Q(pk__in=in_use)).distinct()
    variants = sorted(found, key=lambda v: (nominal_depth(v.depth), v.pk))
    return [_arm(i, v) for i, v in enumerate(variants)]


def _arm(index: int, variant: Variant) -> Arm:
    return Arm(
        index=index,
        pk=variant.pk,
        name=variant.name,
        depth=variant.depth_policy.describe(),
        context=variant.context_config.describe(),
    )


def experiment_categories(experiment: Experiment) -> list[Category]:
    compared = Comparison.objects.filter(experiment=experiment).values("prompt_id")
    found = Category.objects.filter(Q(prompts__experiments=experiment) | Q(prompts__in=compared))
    return list(found.distinct().order_by("order", "slug"))


# --------------------------------------------------------------------------- votes as arrays


def gold_record(experiment: Experiment) -> dict[int, tuple[int, int]]:
    """Per rater: gold checks of this experiment seen and answered right."""
    rows = (
        Rating.objects.filter(comparison__experiment=experiment, gold_correct__isnull=False)
        .values("rater_id")
        .annotate(seen=Count("pk"), correct=Count("pk", filter=Q(gold_correct=True)))
        .order_by()
    )
    return {row["rater_id"]: (row["seen"], row["correct"]) for row in rows}


def gold_failed_raters(experiment: Experiment, record: dict[int, tuple[int, int]] | None = None) -> set[int]:
    """Raters whose accuracy on this experiment's gold checks is below the setting, once they saw enough."""
    record = gold_record(experiment) if record is None else record
    minimum, accuracy = gold_min_seen(), gold_min_accuracy()
    return {rater for rater, (seen, right) in record.items() if seen >= minimum and right / seen < accuracy}


@dataclass
class Votes:
    """The experiment's preference votes (gold checks left out) in the stats convention, and gold counts."""

    arrays: dict[str, np.ndarray]
    gold_votes: int
    gold_record: dict[int, tuple[int, int]]  # rater id → (gold checks seen, right)
    gold_failed_raters: set[int]

    def __len__(self) -> int:
        return len(self.arrays["left"])


def experiment_votes(experiment: Experiment, arms: list[Arm], categories: list[Category]) -> Votes:
    arm_index = {arm.pk: arm.index for arm in arms}
    category_index = {c.pk: i for i, c in enumerate(categories)}
    record = gold_record(experiment)
    failed = gold_failed_raters(experiment, record)
    rows = list(
        Rating.objects.filter(comparison__experiment=experiment, comparison__gold_side="")
        .order_by("pk")
        # Flagged, and not reviewed "keep" (evaluator.reviews): "exclude" and "fix_prompt" stay out.
        .annotate(flag_stands=Q(comparison__flag_count__gt=0) & ~Q(comparison__flag_decision="keep"))
        .values_list(
            "verdict",
            "rater_id",
            "too_fast",
            "flag_stands",
            "comparison__left__variant_id",
            "comparison__right__variant_id",
            "comparison__prompt_id",
            "comparison__prompt__category_id",
        )
    )
    verdict, rater, too_fast, flags, left, right, prompt, category = (
        zip(*rows, strict=True) if rows else [()] * 8
    )
    rater_ids = _ints(rater)
    arrays = {
        "left": _ints(arm_index[v] for v in left),
        "right": _ints(arm_index[v] for v in right),
        "outcome": _ints(OUTCOMES[v] for v in verdict),
        "prompt": _ints(prompt),
        "rater": rater_ids,
        "category": _ints(category_index[c] for c in category),
        "gold_failed": np.isin(rater_ids, sorted(failed)),
        "too_fast": np.array(too_fast, dtype=bool),
        "flagged": np.array(flags, dtype=bool),
    }
    gold_votes = sum(seen for seen, _ in record.values())
    return Votes(arrays=arrays, gold_votes=gold_votes, gold_record=record, gold_failed_raters=failed)


def _ints(values) -> np.ndarray:
    return np.fromiter(values, np.int64)


# --------------------------------------------------------------------------- cost and routing


@dataclass(frozen=True)
class Cost:
    """What an arm's outputs cost in one category (or overall), from the generations actually made."""

    outputs: int = 0
    tokens_per_s: float | None = None
    mean_active_experts: float | None = None
    depth_k_min: int | None = None
    depth_k_max: int | None = None

    @property
    def depth_k(self) -> str:
        """The k the depth policy chose: one value, a range (by category or tag), or "dynamic"."""
        if self.depth_k_min is None:
            return "dynamic" if self.outputs else "–"
        if self.depth_k_min == self.depth_k_max:
            return str(self.depth_k_min)
        return f"{self.depth_k_min}–{self.depth_k_max}"


def experiment_costs(experiment: Experiment) -> dict[tuple[int, int | None], Cost]:
    """Per (variant, category id) and per (variant, None) for all categories together.

    Mean active experts per token is weighted by the tokens each output routed (its routing summary's
    ``tokens``), so long outputs count for more, as they do in the time spent.
    """
    routed = Cast(KT("routing__tokens"), IntegerField())
    done = Generation.objects.filter(experiment=experiment, status=Generation.Status.DONE)
    aggregates = {
        "outputs": Count("pk"),
        "tokens_per_s": Avg("tokens_per_s"),
        "active_tokens": Sum(F("mean_active_experts") * routed, output_field=FloatField()),
        "tokens": Sum(routed, filter=Q(mean_active_experts__isnull=False)),
        "active_plain": Avg("mean_active_experts"),
        "k_min": Min("depth_k"),
        "k_max": Max("depth_k"),
    }
    costs: dict[tuple[int, int | None], Cost] = {}
    per_category = done.values("variant_id", "prompt__category_id").annotate(**aggregates).order_by()
    for row in per_category:
        costs[(row["variant_id"], row["prompt__category_id"])] = _cost(row)
    for row in done.values("variant_id").annotate(**aggregates).order_by():
        costs[(row["variant_id"], None)] = _cost(row)
    return costs


def _cost(row: Mapping[str, Any]) -> Cost:
    active = row["active_tokens"] / row["tokens"] if row["tokens"] else row["active_plain"]
    return Cost(
        outputs=row["outputs"],
        tokens_per_s=row["tokens_per_s"],
        mean_active_experts=active,
        depth_k_min=row["k_min"],
        depth_k_max=row["k_max"],
    )


def experiment_routing(experiment: Experiment) -> dict[tuple[int, int | None], Routing]:
    """Routing summed per (variant, category id), and per (variant, None) over all categories.

    A finished output never changes, so the sums are cached under a key made of the finished outputs
    themselves (how many, the newest, the sum of their ids): new or redone outputs change the key, and
    nothing stale is ever served. The first request after an output arrives parses every routing summary.
    """
    done = Generation.objects.filter(
        experiment=experiment, status=Generation.Status.DONE, routing__isnull=False
    )
    state = done.aggregate(n=Count("pk"), newest=Max("finished_at"), ids=Sum("pk"))
    newest = state["newest"].timestamp() if state["newest"] else 0
    key = f"routing:{experiment.pk}:{state['n']}:{newest}:{state['ids']}"
    sums = cache.get(key)
    if sums is None:
        sums = routing_totals(experiment=experiment)
        cache.set(key, sums, timeout=3600)
    return sums


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ArmRow:
    """One arm in one group: preference and cost, a row of the scores table."""

    arm: Arm
    score: float | None
    ci_low: float | None
    ci_high: float | None
    rank_low: int | None
    rank_high: int | None
    win_rate: float | None
    votes: int
    ties: int
    both_bad: int
    cost: Cost


@dataclass(frozen=True)
class Cell:
    """Row arm against column arm: share of their votes the row arm won (a tie counts half)."""

    rate: float | None
    lo: float | None
    hi: float | None
    wins: int
    ties: int
    n: int


@dataclass
class Group:
    """Results for all categories together (key "overall") or for one category (key = its slug)."""

    key: str
    title: str
    n_votes: int
    n_ties: int
    n_both_bad: int
    verdict: dict[str, Any]
    rows: list[ArmRow]  # arm order
    matrix: list[list[Cell | None]]  # arm order; None on the diagonal
    position_bias: dict[str, Any]
    alpha: float | None
    agreement: dict[int, float]  # rater id → agreement with the majority of the others
    routing: dict[int, Routing] = field(default_factory=dict)  # arm index → routing

    @property
    def head_to_head(self) -> list[tuple[Arm, list[Cell | None]]]:
        return [(row.arm, cells) for row, cells in zip(self.rows, self.matrix, strict=True)]

    @property
    def ranked(self) -> list[ArmRow]:
        """Rows best first; arms without votes last."""
        return sorted(self.rows, key=lambda r: (r.score is None, -(r.score or 0.0), r.arm.index))

    @property
    def verdict_line(self) -> str:
        """The verdict as a sentence; arm names keep their case ("k=4 is preferred…")."""
        message = self.verdict["message"]
        if message.startswith(("no ", "not ")):
            message = message[0].upper() + message[1:]
        return message + "."

    @property
    def leader(self) -> ArmRow | None:
        name = self.verdict.get("leader")
        return next((r for r in self.rows if r.arm.name == name), None)


@dataclass(frozen=True)
class RaterRow:
    pseudonym: str
    votes: int
    gold_seen: int
    gold_correct: int
    gold_failed: bool
    agreement: list[float | None]  # per group, in the order of ExperimentResults.groups


@dataclass
class ExperimentResults:
    arms: list[Arm]
    categories: list[Category]
    exclusions: Exclusions
    counts: dict[str, int]  # stats.apply_exclusions counts: total, each reason, excluded, kept
    gold_votes: int
    groups: list[Group]
    raters: list[RaterRow]
    n_rounds: int

    @property
    def overall(self) -> Group:
        return self.groups[0]


def experiment_results(
    experiment: Experiment, *, exclusions: Exclusions | None = None, n_rounds: int | None = None
) -> ExperimentResults:
    """Everything the results page and the aggregates export show, computed now from the database."""
    exclusions = exclusions or Exclusions()
    n_rounds = bootstrap_rounds() if n_rounds is None else n_rounds
    arms = experiment_arms(experiment)
    categories = experiment_categories(experiment)
    votes = experiment_votes(experiment, arms, categories)
    a = votes.arrays
    keep, counts = stats.apply_exclusions(
        a["gold_failed"], a["too_fast"], a["flagged"], **exclusions.as_kwargs()
    )
    kept = {name: a[name][keep] for name in ("left", "right", "outcome", "prompt", "rater", "category")}
    summary = _summarize(kept, arms, len(categories), n_rounds)
    costs = experiment_costs(experiment)
    routing = experiment_routing(experiment)

    keys = [(OVERALL, "All categories", None, np.ones(len(kept["left"]), bool))] + [
        (c.slug, c.name, c.pk, kept["category"] == i) for i, c in enumerate(categories)
    ]
    parts = [summary["overall"], *summary["categories"]] if summary else [None] * len(keys)
    groups = [
        _group(key, title, part, kept, mask, arms, category_id, costs, routing)
        for (key, title, category_id, mask), part in zip(keys, parts, strict=True)
    ]
    return ExperimentResults(
        arms=arms,
        categories=categories,
        exclusions=exclusions,
        counts=counts,
        gold_votes=votes.gold_votes,
        groups=groups,
        raters=_rater_rows(a["rater"], groups, votes),
        n_rounds=n_rounds,
    )


def _summarize(
    kept: dict[str, np.ndarray], arms: list[Arm], n_categories: int, n_rounds: int
) -> dict[str, Any] | None:
    if len(kept["left"]) == 0 or len(arms) < 2:
        return None  # nothing to fit; the page says "no votes yet"
    return stats.summarize(
        kept,
        n_arms=len(arms),
        n_categories=n_categories,
        n_rounds=n_rounds,
        arm_names=[arm.name for arm in arms],
        exclude_gold_failed=False,  # applied already, so that the counts cover every reason
        exclude_too_fast=False,
        exclude_flagged=False,
    )


def _none_if_nan(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _group(
    key: str,
    title: str,
    part: dict[str, Any] | None,
    kept: dict[str, np.ndarray],
    mask: np.ndarray,
    arms: list[Arm],
    category_id: int | None,
    costs: dict[tuple[int, int | None], Cost],
    routing: dict[tuple[int, int | None], Routing],
) -> Group:
    n = len(arms)
    left, right, outcome = kept["left"][mask], kept["right"][mask], kept["outcome"][mask]
    undecided = outcome >= stats.TIE
    ties = np.bincount(left[undecided], minlength=n) + np.bincount(right[undecided], minlength=n)
    both = outcome == stats.BOTH_BAD
    both_bad = np.bincount(left[both], minlength=n) + np.bincount(right[both], minlength=n)
    table = stats.win_rate_matrix(left, right, outcome, n) if n >= 2 else None
    matrix = [[None if i == j or table is None else _cell(table, i, j) for j in range(n)] for i in range(n)]
    rows = []
    for arm in arms:
        i = arm.index
        played = int(table.n[i].sum()) if table is not None else 0
        won = float(table.wins[i].sum() + 0.5 * table.ties[i].sum()) if played else 0.0
        rows.append(
            ArmRow(
                arm=arm,
                score=_value(part, "scores", i),
                ci_low=_value(part, "ci_low", i),
                ci_high=_value(part, "ci_high", i),
                rank_low=_value(part, "rank_low", i),
                rank_high=_value(part, "rank_high", i),
                win_rate=won / played if played else None,
                votes=played,
                ties=int(ties[i]),
                both_bad=int(both_bad[i]),
                cost=costs.get((arm.pk, category_id), Cost()),
            )
        )
    empty_verdict = {"leader": None, "winner": None, "separated": False, "votes_needed": None}
    return Group(
        key=key,
        title=title,
        n_votes=int(mask.sum()),
        n_ties=int(np.count_nonzero(outcome == stats.TIE)),
        n_both_bad=int(np.count_nonzero(both)),
        verdict=part["verdict"] if part else {**empty_verdict, "message": "no votes yet"},
        rows=rows,
        matrix=matrix,
        position_bias=part["position_bias"] if part else stats.position_bias(outcome),
        alpha=part["krippendorff_alpha"] if part else None,
        agreement=part["rater_agreement"] if part else {},
        routing={
            arm.index: routing[(arm.pk, category_id)] for arm in arms if (arm.pk, category_id) in routing
        },
    )


def _value(part: dict[str, Any] | None, name: str, index: int) -> Any:
    return None if part is None else part[name][index]


def _cell(table: stats.WinRates, i: int, j: int) -> Cell:
    return Cell(
        rate=_none_if_nan(float(table.rate[i, j])),
        lo=_none_if_nan(float(table.lo[i, j])),
        hi=_none_if_nan(float(table.hi[i, j])),
        wins=int(table.wins[i, j]),
        ties=int(table.ties[i, j]),
        n=int(table.n[i, j]),
    )


def _rater_rows(rater: np.ndarray, groups: list[Group], votes: Votes) -> list[RaterRow]:
    """Every rater with a preference vote or a gold check, with their gold record and agreement."""
    ids, counts = np.unique(rater, return_counts=True)
    preference_votes = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    rows = [
        RaterRow(
            pseudonym=rater_pseudonym(rater_id),
            votes=preference_votes.get(rater_id, 0),
            gold_seen=votes.gold_record.get(rater_id, (0, 0))[0],
            gold_correct=votes.gold_record.get(rater_id, (0, 0))[1],
            gold_failed=rater_id in votes.gold_failed_raters,
            agreement=[g.agreement.get(rater_id) for g in groups],
        )
        for rater_id in sorted(set(preference_votes) | set(votes.gold_record))
    ]
    return sorted(rows, key=lambda r: (-r.votes, r.pseudonym))
