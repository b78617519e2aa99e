"""The depth policy an experiment's votes recommend: per category, the cheapest arm not worse than the best.

Rule. In each category the best arm is the one with the highest Bradley-Terry score. Every arm that gives the
category's prompts fewer experts is set against it on their head-to-head votes with the verdict code of
dashboard.stats (a cluster bootstrap by prompt, the interval of the difference, the anytime-valid tests). An
arm counts as worse when that verdict declares the best arm the winner, with Holm's method across every
comparison of the recommendation, so that the chance of calling any cheaper arm worse by mistake stays at
most α (stats.ALPHA). The category gets the cheapest arm that is not worse and has at least
stats.MIN_DECISIVE decisive votes against the best; otherwise the best arm itself. "Not shown worse" is not
"shown equal": few votes pass a cheap arm more easily, which is why the page offers a follow-up experiment,
the recommendation against fixed d, rated blind like any other.

The result is a by_category depth policy (categories without votes get the checkpoint's own top-k) and the
same choice as settings for llama.cpp, vLLM and transformers.
"""

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dashboard import analysis, stats
from evaluator.engine.depth import DepthPolicy
from evaluator.models import Experiment

# GGUF metadata prefix of the expert count per architecture family (llama.cpp --override-kv).
GGUF_ARCH = {"qwen3_moe": "qwen3moe", "qwen2_moe": "qwen2moe", "mixtral": "llama"}


@dataclass(frozen=True)
class Choice:
    """The depth chosen for one category and the evidence for it."""

    category: str
    title: str
    k: int
    arm: str
    best: str
    reason: str


@dataclass
class Recommendation:
    policy: dict[str, Any]  # a by_category depth policy, as an arm's JSON
    choices: list[Choice]
    default_k: int
    alpha: float
    comparisons: int  # cheaper arms set against a best one (the Holm family)
    rule: str
    notes: list[str] = field(default_factory=list)
    family: str = "qwen3_moe"

    @property
    def policy_json(self) -> str:
        return json.dumps(self.policy, sort_keys=True)

    def command_lines(self) -> list[dict[str, Any]]:
        """Per category, the same depth as settings for the tools people run the model with."""
        prefix = GGUF_ARCH.get(self.family, self.family.replace("_", ""))
        lines = []
        for choice in self.choices:
            k = choice.k
            lines.append(
                {
                    "category": choice.category,
                    "k": k,
                    "llama_cpp": f"--override-kv {prefix}.expert_used_count=int:{k}",
                    "vllm": f"--hf-overrides '{{\"num_experts_per_tok\": {k}}}'",
                    "transformers": f"AutoModelForCausalLM.from_pretrained(path, num_experts_per_tok={k})",
                }
            )
        return lines

    @property
    def choices_with_lines(self) -> list[tuple[Choice, dict[str, Any]]]:
        return list(zip(self.choices, self.command_lines(), strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "rule": self.rule,
            "alpha": self.alpha,
            "comparisons": self.comparisons,
            "choices": [choice.__dict__ for choice in self.choices],
            "settings": self.command_lines(),
            "notes": self.notes,
        }


def _k_in(policy: DepthPolicy, category: str) -> int | None:
    """The one k an arm gives a category's prompts, or None when it varies (by tag, dynamic, auto)."""
    if policy.kind in ("fixed", "by_category"):
        return policy.k_for(category)
    return None


def recommend_policy(*, experiment: Experiment, results: Any = None) -> Recommendation | None:
    """The recommended by_category policy from the experiment's votes, or None without any vote."""
    results = results or analysis.experiment_results(experiment)
    if not results.arms or not results.categories:
        return None
    default_k = int(experiment.checkpoint.default_top_k or 1)
    policies = {arm.pk: DepthPolicy.from_dict(arm_depth) for arm, arm_depth in _arm_depths(results.arms)}
    votes = analysis.experiment_votes(experiment, results.arms, results.categories).arrays
    keep, _ = stats.apply_exclusions(
        votes["gold_failed"], votes["too_fast"], votes["flagged"], **results.exclusions.as_kwargs()
    )
    kept = {
        name: np.asarray(votes[name])[keep] for name in ("left", "right", "outcome", "prompt", "category")
    }
    groups = {group.key: group for group in results.groups}
    notes: list[str] = []
    plans = []  # (category, best row, [(candidate row, k, contest index)])
    contests = []
    for index, category in enumerate(results.categories):
        group = groups.get(category.slug)
        scored = [row for row in (group.rows if group else []) if row.score is not None]
        ks = {row.arm.pk: _k_in(policies[row.arm.pk], category.slug) for row in scored}
        scored = [row for row in scored if ks[row.arm.pk] is not None]
        if not scored:
            plans.append((category, None, []))
            continue
        best = max(scored, key=lambda row: (row.score, -ks[row.arm.pk]))
        candidates = sorted(
            (row for row in scored if ks[row.arm.pk] < ks[best.arm.pk]), key=lambda row: ks[row.arm.pk]
        )
        mask = kept["category"] == index
        entries = []
        for row in candidates:
            contests.append(_head_to_head(kept, mask, best.arm.index, row.arm.index))
            entries.append((row, ks[row.arm.pk], len(contests) - 1))
        plans.append((category, (best, ks[best.arm.pk]), entries))
    verdicts = (
        stats.verdicts(contests, ["best", "cheaper"], family=list(range(len(contests)))) if contests else []
    )
    choices, mapping = [], {}
    for category, best, entries in plans:
        if best is None:
            notes.append(f"{category.name}: no votes on arms with one depth for it; it keeps k={default_k}.")
            continue
        best_row, best_k = best
        choice = Choice(category.slug, category.name, best_k, best_row.arm.name, best_row.arm.name, "")
        for row, k, at in entries:
            verdict, found = verdicts[at], contests[at]
            if found.n_decisive < stats.MIN_DECISIVE:
                continue
            if verdict["declared"] and verdict["winner"] == "best":
                continue
            choice = Choice(
                category.slug,
                category.name,
                k,
                row.arm.name,
                best_row.arm.name,
                f"not shown worse than {best_row.arm.name} (k={best_k}) in {found.n_decisive} decisive "
                f"votes, Holm-adjusted p = {verdict['p_adjusted']:.2f}",
            )
            break
        if not choice.reason:
            shown = [
                f"{row.arm.name} {'worse' if verdicts[at]['declared'] else 'too few votes'}"
                for row, _, at in entries
            ]
            choice = Choice(
                category.slug,
                category.name,
                best_k,
                best_row.arm.name,
                best_row.arm.name,
                "the best-scored arm" + (f"; cheaper: {', '.join(shown)}" if shown else ""),
            )
        choices.append(choice)
        mapping[category.slug] = choice.k
    if not choices:
        return None
    policy = DepthPolicy.by_category(mapping, default_k)
    policy.validate(experiment.checkpoint.num_experts or max(mapping.values()))
    rule = (
        "Per category, the arm with the fewest experts whose head-to-head votes (at least "
        f"{stats.MIN_DECISIVE} decisive) do not show it worse than the best-scored arm; worse means the "
        f"verdict code declares the best the winner, Holm-adjusted across {len(contests)} comparisons so the "
        f"chance of any false 'worse' is at most {stats.ALPHA:g}. Categories without votes get k={default_k}."
    )
    return Recommendation(
        policy=policy.to_dict(),
        choices=choices,
        default_k=default_k,
        alpha=stats.ALPHA,
        comparisons=len(contests),
        rule=rule,
        notes=notes,
        family=experiment.checkpoint.family or "qwen3_moe",
    )


def _arm_depths(arms: list[Any]) -> list[tuple[Any, dict]]:
    from evaluator.models import Variant

    depth = dict(Variant.objects.filter(pk__in=[arm.pk for arm in arms]).values_list("pk", "depth"))
    return [(arm, depth[arm.pk]) for arm in arms]


def _head_to_head(kept: dict[str, np.ndarray], mask: np.ndarray, best: int, other: int) -> stats.Contest:
    """The verdict code's contest of two arms on their votes against each other in one category."""
    between = mask & (
        ((kept["left"] == best) & (kept["right"] == other))
        | ((kept["left"] == other) & (kept["right"] == best))
    )
    left = np.where(kept["left"][between] == best, 0, 1)
    right = 1 - left
    outcome, prompt = kept["outcome"][between], kept["prompt"][between]
    if len(outcome) == 0:
        return stats.contest(
            np.array([np.nan, np.nan]), np.zeros((1, 2)), _votes(left, right, outcome, prompt)
        )
    boot = stats.bootstrap_bt(left, right, outcome, 2, prompt, n_rounds=analysis.bootstrap_rounds())
    scores = boot.fit.scores.copy()
    # The contest is of these two: "best" (index 0) stays the leader only if its score is the higher one.
    return stats.contest(scores, boot.samples, _votes(left, right, outcome, prompt))


def _votes(
    left: np.ndarray, right: np.ndarray, outcome: np.ndarray, prompt: np.ndarray
) -> dict[str, np.ndarray]:
    return {"left": left, "right": right, "outcome": outcome, "prompt": prompt}


def create_follow_up(*, experiment: Experiment, recommendation: Recommendation) -> Experiment:
    """A draft experiment checking the recommendation with raters: its by_category arm against fixed d.

    Same checkpoint, prompts, seeds, sampling and rating settings as the experiment it comes from; the arms
    are reused when the checkpoint has them already.
    """
    from django.db import transaction

    checkpoint = experiment.checkpoint
    d = recommendation.default_k
    with transaction.atomic():
        recommended = _variant(
            checkpoint, recommendation.policy, f"recommended by category ({experiment.name})"
        )
        baseline = _variant(checkpoint, {"kind": "fixed", "k": d}, f"fixed k={d}")
        if recommended.pk == baseline.pk:
            raise ValueError(
                f"The recommendation is fixed k={d} in every category: there is nothing to check."
            )
        name = f"Recommended vs fixed {d} · {experiment.name}"[:190]
        n = 1
        while Experiment.objects.filter(name=name).exists():
            n += 1
            name = f"Recommended vs fixed {d} · {experiment.name}"[:185] + f" #{n}"
        follow_up = Experiment.objects.create(
            name=name,
            checkpoint=checkpoint,
            seeds=experiment.seeds,
            sampling=experiment.sampling,
            pairing=Experiment.Pairing.BASELINE,
            baseline=baseline,
            raters_per_comparison=experiment.raters_per_comparison,
            guidelines=experiment.guidelines,
            criteria=experiment.criteria,
            gold_rate=experiment.gold_rate,
            min_seconds_per_vote=experiment.min_seconds_per_vote,
        )
        follow_up.variants.set([baseline, recommended])
        follow_up.prompts.set(experiment.prompts.all())
    return follow_up


def _variant(checkpoint: Any, depth: dict[str, Any], name: str) -> Any:
    """The checkpoint's native-context arm with this depth policy, created under `name` when missing."""
    from evaluator.models import Variant

    wanted = DepthPolicy.from_dict(depth)
    for variant in checkpoint.variants.all():
        try:
            same = variant.depth_policy == wanted and variant.context_config.kind == "native"
        except (ValueError, KeyError, TypeError):
            continue
        if same and not variant.context_config.input_budget:
            return variant
    base, n = name[:95], 1
    while checkpoint.variants.filter(name=base).exists():
        n += 1
        base = f"{name[:90]} ({n})"
    variant = Variant(checkpoint=checkpoint, name=base, depth=wanted.to_dict(), context={"kind": "native"})
    variant.full_clean()
    variant.save()
    return variant
