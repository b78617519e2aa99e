"""Turn an experiment's ratings and outputs into its results: preferences per category, certainty, cost.

The database rows become the arrays of ``dashboard.stats`` (its module docstring has the convention);
``stats.summarize`` does the statistics. Around it this module adds what only the database knows: which
votes to exclude and why, the cost of each arm (tokens/s, experts per token actually used) and the
routing of its outputs, summed per arm and category for the heatmaps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db.models import Avg, Count, F, FloatField, IntegerField, Max, Min, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
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
    "flagged": "votes on comparisons a rater flagged (unless a researcher kept them)",
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
    """Which votes the results count. Defaults (those of ``stats.summarize`` too): leave out failed-gold
    raters and flagged comparisons, keep too-fast votes (counted and shown); identical outputs are counted
    apart, not as ties."""

    gold_failed: bool = True
    too_fast: bool = False
    flagged: bool = True
    identical_as_ties: bool = False  # count each comparison with identical outputs as k ties in the scores

    @classmethod
    def from_query(cls, query: QueryDict) -> Exclusions:
        """``?exclusions=chosen&exclude=flagged…&identical=ties`` from the page's form; without the marker,
        the defaults."""
        if "exclusions" not in query:
            return cls()
        chosen = set(query.getlist("exclude"))
        return cls(
            **{reason: reason in chosen for reason in REASONS},
            identical_as_ties=query.get("identical") == "ties",
        )

    def query_items(self) -> list[tuple[str, str]]:
        """The options as query items; they also key the cached results (selectors.results_for_page)."""
        if self == Exclusions():
            return []
        items = [("exclusions", "chosen")] + [("exclude", r) for r in REASONS if getattr(self, r)]
        return items + ([("identical", "ties")] if self.identical_as_ties else [])

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
            "comparison__left_id",
            "comparison__right_id",
        )
    )
    verdict, rater, too_fast, flags, left, right, prompt, category, left_output, right_output = (
        zip(*rows, strict=True) if rows else [()] * 10
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
        "left_output": _ints(left_output),
        "right_output": _ints(right_output),
    }
    gold_votes = sum(seen for seen, _ in record.values())
    return Votes(arrays=arrays, gold_votes=gold_votes, gold_record=record, gold_failed_raters=failed)


def _ints(values) -> np.ndarray:
    return np.fromiter(values, np.int64)


# --------------------------------------------------------------------- length, markdown, identical outputs


MARKDOWN_ELEMENT = re.compile(r"^\s{0,3}(#{1,6}\s|[-*+]\s|\d+[.)]\s|```|>)|\*\*[^*\n]+\*\*", re.M)


def markdown_elements(text: str) -> int:
    """Headings, list items, code fences, quotes and bold spans: the markdown Chatbot Arena's style control
    counts."""
    return len(MARKDOWN_ELEMENT.findall(text))


def output_styles(experiment: Experiment) -> dict[int, tuple[int, int]]:
    """Per finished output: its new tokens and its markdown elements (one query, texts read once)."""
    done = Generation.objects.filter(experiment=experiment, status=Generation.Status.DONE)
    return {
        pk: (tokens or 0, markdown_elements(text))
        for pk, tokens, text in done.values_list("pk", "new_tokens", "text")
    }


def add_styles(arrays: dict[str, np.ndarray], styles: dict[int, tuple[int, int]]) -> None:
    """Each vote's two outputs' lengths and markdown counts, in the stats convention."""
    for side in ("left", "right"):
        found = [styles.get(pk, (0, 0)) for pk in arrays[f"{side}_output"].tolist()]
        arrays[f"{side}_length"] = np.array([tokens for tokens, _ in found], dtype=float)
        arrays[f"{side}_markdown"] = np.array([marks for _, marks in found], dtype=float)


@dataclass(frozen=True)
class Identical:
    """Comparisons of one pair of arms in one category (or all) whose two outputs were the same text."""

    first: Arm
    second: Arm
    identical: int
    comparisons: int  # all ready comparisons of the pair, identical or not

    @property
    def share(self) -> float:
        return self.identical / self.comparisons if self.comparisons else 0.0


def identical_outputs(
    experiment: Experiment, arms: list[Arm], categories: list[Category]
) -> tuple[dict[int | None, list[Identical]], dict[str, np.ndarray]]:
    """Per category id (None: all): how often each pair of arms wrote the same text; and those comparisons
    as tie votes in the stats convention (one per rater the experiment asks for), for "count as ties".

    Identical outputs are never shown to raters, so no vote records them; the comparison row does.
    """
    arm_index = {arm.pk: arm.index for arm in arms}
    category_index = {c.pk: i for i, c in enumerate(categories)}
    rows = list(
        Comparison.objects.filter(experiment=experiment, gold_side="", ready_at__isnull=False).values_list(
            "pk",
            "is_identical",
            "left__variant_id",
            "right__variant_id",
            "prompt_id",
            "prompt__category_id",
            "left_id",
            "right_id",
        )
    )
    tally: dict[tuple[int | None, int, int], list[int]] = {}
    ties: list[tuple[int, int, int, int, int, int, int]] = []
    for pk, same, left, right, prompt, category, left_output, right_output in rows:
        a, b = sorted((arm_index[left], arm_index[right]))
        for key in ((category, a, b), (None, a, b)):
            counts = tally.setdefault(key, [0, 0])
            counts[0] += same
            counts[1] += 1
        if same:
            ties.append(
                (
                    pk,
                    arm_index[left],
                    arm_index[right],
                    prompt,
                    category_index[category],
                    left_output,
                    right_output,
                )
            )
    by_category: dict[int | None, list[Identical]] = {}
    for (category, a, b), (same, total) in sorted(tally.items(), key=lambda item: (item[0][1], item[0][2])):
        by_category.setdefault(category, []).append(Identical(arms[a], arms[b], same, total))
    k = max(1, experiment.raters_per_comparison)
    columns = list(zip(*ties, strict=True)) if ties else [()] * 7
    pk, left, right, prompt, category, left_output, right_output = (np.repeat(_ints(c), k) for c in columns)
    as_ties = {
        "left": left,
        "right": right,
        "outcome": np.full(len(left), stats.TIE),
        "prompt": prompt,
        # Each comparison its own stand-in rater: nobody voted; the outputs' sameness is one fact.
        "rater": -pk,
        "category": category,
        "left_output": left_output,
        "right_output": right_output,
    }
    return by_category, as_ties


# --------------------------------------------------------------------------- cost and routing


@dataclass(frozen=True)
class Cost:
    """What an arm's outputs cost in one category (or overall), from the generations actually made."""

    outputs: int = 0
    tokens_per_s: float | None = None
    mean_active_experts: float | None = None
    # Expert slots the depth really computed per token: dynamic depth drops some slots, so this is the
    # cost; outputs stored before it was recorded count their active experts.
    compute_experts: float | None = None
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
        "compute_tokens": Sum(
            Coalesce("compute_experts", "mean_active_experts") * routed, output_field=FloatField()
        ),
        "compute_plain": Avg(Coalesce("compute_experts", "mean_active_experts")),
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
    computed = row["compute_tokens"] / row["tokens"] if row["tokens"] else row["compute_plain"]
    return Cost(
        outputs=row["outputs"],
        tokens_per_s=row["tokens_per_s"],
        mean_active_experts=active,
        compute_experts=computed,
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
    lc_score: float | None = None  # length-controlled (style control) score and interval
    lc_ci_low: float | None = None
    lc_ci_high: float | None = None


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
    identical: list[Identical] = field(default_factory=list)  # per pair of arms: outputs that were the same
    identical_as_ties: int = 0  # tie votes standing for identical outputs, when counted
    length_controlled: dict[str, Any] | None = None  # stats' style-control part: verdict, effects, note

    @property
    def lc_verdict_line(self) -> str:
        if not self.length_controlled:
            return ""
        # Not capitalised: the message may begin with an arm's name ("k=4 is preferred…").
        return self.length_controlled["verdict"]["message"] + "."

    @property
    def length_effect(self) -> dict[str, float] | None:
        return (self.length_controlled or {}).get("effects", {}).get("length")

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

    @property
    def min_decisive(self) -> int:
        return stats.MIN_DECISIVE

    @property
    def sign_guard(self) -> int:
        return stats.SIGN_GUARD_PROMPTS

    @property
    def error_rate(self) -> str:
        """The chance of any false verdict the page guarantees, as a percentage."""
        return f"{stats.ALPHA:.0%}"


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
    identical, as_ties = identical_outputs(experiment, arms, categories)
    names = ("left", "right", "outcome", "prompt", "rater", "category", "left_output", "right_output")
    kept = {name: a[name][keep] for name in names}
    judged = len(kept["left"])
    if exclusions.identical_as_ties:
        kept = {name: np.concatenate([kept[name], as_ties[name]]) for name in names}
    kept["pseudo"] = np.arange(len(kept["left"])) >= judged
    add_styles(kept, output_styles(experiment))
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
    for group, (_, _, category_id, mask) in zip(groups, keys, strict=True):
        group.identical = identical.get(category_id, [])
        group.identical_as_ties = int((mask & kept["pseudo"]).sum())
        group.n_votes -= group.identical_as_ties
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
    prompt, rater = kept["prompt"][mask], kept["rater"][mask]
    table = stats.win_rate_matrix(left, right, outcome, n, prompt=prompt, rater=rater) if n >= 2 else None
    matrix = [[None if i == j or table is None else _cell(table, i, j) for j in range(n)] for i in range(n)]
    controlled = part["length_controlled"] if part else None
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
                lc_score=_value(controlled, "scores", i),
                lc_ci_low=_value(controlled, "ci_low", i),
                lc_ci_high=_value(controlled, "ci_high", i),
            )
        )
    empty_verdict = {"leader": None, "winner": None, "declared": False, "votes_needed": None}
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
        length_controlled=controlled,
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
