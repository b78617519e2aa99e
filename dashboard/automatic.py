"""Automatic measures beside the votes: accuracy on reference answers, overthinking, likelihood, agreement.

Reads are three queries over an experiment's outputs and likelihood rows (not its votes); the numeric work is
pure functions on arrays. The results page gets it from the cache while the outputs are unchanged.

Accuracy intervals are Wilson intervals on the effective sample size (Korn and Graubard, 1998): outputs of one
prompt (its seeds, its arms' shared difficulty) are correlated, so n outputs from m prompts carry less
information than n independent ones. With per-prompt successes y_i of n_i outputs and p = Σy/Σn, the
cluster-robust variance of p is v = m/(m−1) · Σ(y_i − p·n_i)² / (Σn)²; the effective size is
n* = min(Σn, p(1−p)/v), and the interval is Wilson's at p with n*.
"""

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db.models import Count, Max

from evaluator.models import Experiment, Generation, Likelihood

Z95 = 1.959963984540054
OVERALL = "overall"


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (successes may be fractional: an effective count)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def clustered_wilson(successes: Sequence[float], totals: Sequence[float], z: float = Z95) -> dict[str, float]:
    """Share of successes with a Wilson interval on the effective sample size, clustered by prompt.

    successes[i] and totals[i] are one prompt's correct outputs and outputs. Returns the share, the interval,
    the number of outputs and prompts, the effective size and the design effect (n / effective size).
    """
    y, n = np.asarray(successes, float), np.asarray(totals, float)
    total, m = float(n.sum()), len(n)
    if total == 0:
        return {
            "share": math.nan,
            "lo": math.nan,
            "hi": math.nan,
            "n": 0,
            "prompts": 0,
            "effective": 0.0,
            "deff": 1.0,
        }
    p = float(y.sum()) / total
    effective = total
    if m > 1 and 0 < p < 1:
        variance = m / (m - 1) * float(((y - p * n) ** 2).sum()) / total**2
        if variance > 0:
            effective = min(total, p * (1 - p) / variance)
    lo, hi = wilson(p * effective, effective, z)
    return {
        "share": p,
        "lo": lo,
        "hi": hi,
        "n": int(total),
        "prompts": m,
        "effective": effective,
        "deff": total / effective if effective else 1.0,
    }


@dataclass(frozen=True)
class ArmMeasures:
    """One arm in one category: automatic measures of its outputs."""

    arm_pk: int
    name: str
    accuracy: dict[str, float] | None  # clustered_wilson of reference scores; None without references
    outputs: int
    mean_tokens: float | None
    hit_limit: dict[str, float] | None  # clustered_wilson of "used every new token"
    repetition: float | None  # mean share of repeated 4-grams
    nll_per_token: float | None  # mean over prompts of the prompt text's NLL per token (nats)
    answer_nll: float | None  # mean over prompts of the reference answer's NLL per token (nats)
    auto_fallbacks: int = 0  # outputs an auto policy could not place (default depth used)


@dataclass
class CategoryMeasures:
    key: str
    title: str
    rows: list[ArmMeasures]
    people_prefer: str | None = None  # the arm the votes prefer (the verdict's leader)
    people_declared: bool = False  # …and whether the verdict declared it
    most_accurate: str | None = None
    accuracy_clear: bool = False  # the most accurate arm's interval clears every other arm's
    agreement: str = ""  # a sentence: do votes and accuracy point to the same arm?

    @property
    def has_accuracy(self) -> bool:
        return any(r.accuracy for r in self.rows)

    @property
    def has_likelihood(self) -> bool:
        return any(r.nll_per_token is not None for r in self.rows)


@dataclass
class AutomaticResults:
    categories: list[CategoryMeasures]
    references: int  # outputs scored against a reference answer
    likelihood_rows: int
    recommendation: Any = None  # dashboard.recommend.Recommendation, when votes allow one
    notes: list[str] = field(default_factory=list)


def _by_prompt(values: list[tuple[int, float]]) -> tuple[list[float], list[float]]:
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for prompt, value in values:
        sums[prompt][0] += value
        sums[prompt][1] += 1
    return [s for s, _ in sums.values()], [n for _, n in sums.values()]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def measure_rows(
    arms: Sequence[tuple[int, str]], outputs: list[dict[str, Any]], likelihoods: list[dict[str, Any]]
) -> list[ArmMeasures]:
    """Per arm (pk, name), in that order, the measures of the given outputs and likelihood rows."""
    rows = []
    for pk, name in arms:
        mine = [o for o in outputs if o["variant_id"] == pk]
        scored = [
            (o["prompt_id"], float(o["reference_correct"]))
            for o in mine
            if o["reference_correct"] is not None
        ]
        limits = [(o["prompt_id"], float(o["hit_limit"])) for o in mine if o["hit_limit"] is not None]
        lengths = [o["output_tokens"] for o in mine if o["output_tokens"] is not None]
        repeats = [o["repetition"] for o in mine if o["repetition"] is not None]
        lik = [r for r in likelihoods if r["variant_id"] == pk and r["tokens"]]
        answers = [
            r["answer_nll"] / r["answer_tokens"]
            for r in lik
            if r["answer_tokens"] and r["answer_nll"] is not None
        ]
        rows.append(
            ArmMeasures(
                arm_pk=pk,
                name=name,
                accuracy=clustered_wilson(*_by_prompt(scored)) if scored else None,
                outputs=len(mine),
                mean_tokens=_mean(lengths),
                hit_limit=clustered_wilson(*_by_prompt(limits)) if limits else None,
                repetition=_mean(repeats),
                nll_per_token=_mean([r["nll"] / r["tokens"] for r in lik]),
                answer_nll=_mean(answers),
                auto_fallbacks=sum(1 for o in mine if (o["auto_depth"] or {}).get("fallback")),
            )
        )
    return rows


def most_accurate(rows: list[ArmMeasures]) -> tuple[str | None, bool]:
    """The arm with the highest accuracy, and whether its interval lies above every other arm's."""
    scored = [r for r in rows if r.accuracy and r.accuracy["n"]]
    if len(scored) < 2:
        return None, False
    best = max(scored, key=lambda r: r.accuracy["share"])
    others = [r for r in scored if r is not best]
    if all(r.accuracy["share"] == best.accuracy["share"] for r in others):
        return None, False
    clear = all(best.accuracy["lo"] > r.accuracy["hi"] for r in others)
    return best.name, clear


def agreement_sentence(
    people: str | None, declared: bool, accurate: str | None, clear: bool, has_accuracy: bool
) -> str:
    """Do the votes and the reference answers point to the same arm? Said with how sure each side is."""
    if not has_accuracy:
        return "No reference answers in this category: only the votes speak."
    if people is None:
        return f"No votes yet; the reference answers favour {accurate}." if accurate else "No votes yet."
    if accurate is None:
        return "Every arm is as accurate as the others here, so accuracy does not pick an arm."
    sure_people = "raters prefer" if declared else "raters lean to"
    sure_accuracy = "clearly the most accurate" if clear else "the most accurate, not clearly"
    if people == accurate:
        return f"Agree: {sure_people} {people}, and it is {sure_accuracy}."
    return f"Disagree: {sure_people} {people}, but {accurate} is {sure_accuracy}."


def _fingerprint(experiment: Experiment) -> tuple:
    outputs = Generation.objects.filter(experiment=experiment, status=Generation.Status.DONE).aggregate(
        n=Count("pk"), last=Max("finished_at")
    )
    likelihoods = Likelihood.objects.filter(experiment=experiment).aggregate(n=Count("pk"), last=Max("pk"))
    last = outputs["last"].timestamp() if outputs["last"] else 0
    return (outputs["n"], last, likelihoods["n"], likelihoods["last"])


def automatic_results(experiment: Experiment, results: Any) -> AutomaticResults:
    """The automatic measures per category (and overall) beside the vote results of the page.

    `results` is the page's dashboard.analysis.ExperimentResults (its arms, categories and verdicts).
    """
    arms = [(arm.pk, arm.name) for arm in results.arms]
    categories = [(c.slug, c.name, c.pk) for c in results.categories]
    outputs = list(
        Generation.objects.filter(experiment=experiment, status=Generation.Status.DONE).values(
            "variant_id",
            "prompt_id",
            "prompt__category_id",
            "reference_correct",
            "output_tokens",
            "hit_limit",
            "repetition",
            "auto_depth",
        )
    )
    likelihoods = list(
        Likelihood.objects.filter(experiment=experiment).values(
            "variant_id", "prompt__category_id", "tokens", "nll", "answer_tokens", "answer_nll"
        )
    )
    verdicts = {group.key: group.verdict for group in results.groups}
    groups = [(OVERALL, "All categories", None), *categories]
    out = []
    for key, title, category_id in groups:
        if category_id is None:
            rows = measure_rows(arms, outputs, likelihoods)
        else:
            rows = measure_rows(
                arms,
                [o for o in outputs if o["prompt__category_id"] == category_id],
                [r for r in likelihoods if r["prompt__category_id"] == category_id],
            )
        verdict = verdicts.get(key, {})
        accurate, clear = most_accurate(rows)
        measures = CategoryMeasures(
            key=key,
            title=title,
            rows=rows,
            people_prefer=verdict.get("leader"),
            people_declared=bool(verdict.get("winner")),
            most_accurate=accurate,
            accuracy_clear=clear,
        )
        measures.agreement = agreement_sentence(
            measures.people_prefer, measures.people_declared, accurate, clear, measures.has_accuracy
        )
        out.append(measures)
    return AutomaticResults(
        categories=out,
        references=sum(1 for o in outputs if o["reference_correct"] is not None),
        likelihood_rows=len(likelihoods),
    )


def for_page(experiment: Experiment, stored: Any) -> AutomaticResults:
    """automatic_results for the results page, kept in the cache while outputs and votes are unchanged.

    `stored` is the page's selectors.StoredResults; the recommended policy (dashboard.recommend) is added.
    """
    from dashboard import recommend

    fingerprint = "-".join(str(part) for part in _fingerprint(experiment))
    key = f"automatic-{experiment.pk}-{stored.computed_at.timestamp()}-{fingerprint}"
    found = cache.get(key)
    if found is None:
        found = automatic_results(experiment, stored.results)
        found.recommendation = recommend.recommend_policy(experiment=experiment, results=stored.results)
        cache.set(key, found, timeout=3600)
    return found
