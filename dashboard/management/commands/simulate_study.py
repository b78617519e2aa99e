"""Simulated studies with known truth, run through the real verdict code: do the page's guarantees hold?"""

import json
import time
from dataclasses import dataclass

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from dashboard import stats


@dataclass(frozen=True)
class Design:
    """One simulated study: categories × arms, every pair on every prompt, rated over several looks."""

    n_categories: int = 4
    n_arms: int = 3
    looks: int = 10
    prompts_per_category: int = 40
    raters: int = 16
    raters_per_comparison: int = 2
    prompt_sd: float = 50.0  # score points: prompts where one arm happens to shine
    rater_sd: float = 35.0  # raters with their own taste
    effect: float = 45.0  # score points between neighbouring arms in the non-null studies
    length_effect: float = 2.5  # log-odds per unit normalised length difference (length-only studies)
    long_ratio: float = 1.6  # the long arm's outputs are this much longer
    n_rounds: int = 200

    @property
    def n_pairs(self) -> int:
        return self.n_arms * (self.n_arms - 1) // 2


def study_votes(
    design: Design,
    scores: np.ndarray,
    rng: np.random.Generator,
    *,
    lengths: np.ndarray,
    length_effect: float,
    n_prompts: int | None = None,
    first_prompt: int = 0,
    n_raters: int | None = None,
    tastes: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One study's votes in hand-out order (shuffled), every pair on every prompt; ``tastes`` fixes the
    raters' own preferences (see stats.simulate_votes)."""
    n_prompts = design.prompts_per_category * design.n_categories if n_prompts is None else n_prompts
    votes = stats.simulate_votes(
        scores,
        n_prompts=n_prompts,
        raters_per_prompt=design.raters_per_comparison,
        pairs=design.n_pairs,
        seed=rng,
        n_raters=design.raters if n_raters is None else n_raters,
        prompt_sd=design.prompt_sd,
        rater_sd=design.rater_sd,
        arm_length=lengths,
        length_effect=length_effect,
        first_prompt=first_prompt,
        rater_effects=tastes,
    )
    order = rng.permutation(len(votes["left"]))
    return {key: value[order] for key, value in votes.items()}


def population_difference(design: Design, scores: np.ndarray, seed: int) -> np.ndarray:
    """[categories, arms, arms]: the score differences a study estimates, from one very large study.

    Prompt and rater effects pull the average preference toward a coin flip, so the target is the fit to
    many prompts and many raters, not the scores the votes were drawn with.
    """
    rng = np.random.default_rng(seed)
    big = Design(**{**design.__dict__, "prompts_per_category": 4000, "raters": 4000})
    votes = study_votes(big, scores, rng, lengths=np.full(design.n_arms, 300.0), length_effect=0.0)
    out = np.zeros((design.n_categories, design.n_arms, design.n_arms))
    for c in range(design.n_categories):
        mask = votes["category"] == c
        fit = stats.bradley_terry(
            votes["left"][mask], votes["right"][mask], votes["outcome"][mask], design.n_arms
        )
        out[c] = fit.scores[:, None] - fit.scores[None, :]
    return out


def run_looks(design: Design, votes: dict[str, np.ndarray], seed: int) -> list[dict]:
    """The summary at each look: after 1/looks, 2/looks, … of the votes."""
    n = len(votes["left"])
    ends = [round(n * (k + 1) / design.looks) for k in range(design.looks)]
    return [
        stats.summarize(
            {key: value[:end] for key, value in votes.items()},
            n_arms=design.n_arms,
            n_categories=design.n_categories,
            n_rounds=design.n_rounds,
            seed=seed + k,
        )
        for k, end in enumerate(ends)
    ]


def null_study(design: Design, rng: np.random.Generator, seed: int) -> dict[str, bool]:
    scores = np.full((design.n_categories, design.n_arms), 1000.0)
    votes = study_votes(design, scores, rng, lengths=np.full(design.n_arms, 300.0), length_effect=0.0)
    summaries = run_looks(design, votes, seed)
    raw = any(c["verdict"]["declared"] for s in summaries for c in [s["overall"], *s["categories"]])
    controlled = any(
        c["length_controlled"]["verdict"]["declared"]
        for s in summaries
        for c in [s["overall"], *s["categories"]]
    )
    return {"raw": raw, "controlled": controlled}


def true_scores(design: Design, rng: np.random.Generator) -> np.ndarray:
    """Per category the arms 0, effect, 2·effect, … in a random order: each category has its own best arm."""
    ladder = 1000.0 + design.effect * np.arange(design.n_arms)
    return np.stack([rng.permutation(ladder) for _ in range(design.n_categories)])


def effect_study(
    design: Design, rng: np.random.Generator, seed: int, truth: np.ndarray, scores: np.ndarray
) -> dict[str, list]:
    """Coverage of the leader-minus-runner-up interval at every look, and power at the announced votes."""
    lengths = np.full(design.n_arms, 300.0)
    tastes = rng.normal(0.0, design.rater_sd, (design.raters, design.n_arms))
    votes = study_votes(design, scores, rng, lengths=lengths, length_effect=0.0, tastes=tastes)
    summaries = run_looks(design, votes, seed)
    covered = []
    for summary in summaries:
        for c, part in enumerate(summary["categories"]):
            verdict = part["verdict"]
            if verdict["leader"] is None or verdict["difference_low"] is None:
                continue
            a, b = int(verdict["leader"].split()[-1]), int(verdict["runner_up"].split()[-1])
            covered.append(verdict["difference_low"] <= truth[c, a, b] <= verdict["difference_high"])
    power = power_at_votes_needed(design, rng, seed, votes, scores, truth, summaries, None)
    same_raters = power_at_votes_needed(design, rng, seed, votes, scores, truth, summaries, tastes)
    return {"covered": covered, "power": power, "power_same_raters": same_raters}


def power_at_votes_needed(
    design: Design,
    rng: np.random.Generator,
    seed: int,
    votes: dict,
    scores: np.ndarray,
    truth: np.ndarray,
    summaries: list[dict],
    tastes: np.ndarray | None,
) -> list[tuple[bool, bool]]:
    """For each undecided category at each look: add the votes it asked for, then read the verdict.

    Without ``tastes`` the new votes are what the page plans: new prompts, and as many new raters as it
    names (their own tastes). With ``tastes`` the study's own raters cast them all, whose tastes stay.
    Per check: was the best arm declared, and was the true lead at least the one the page planned for?
    """
    n = len(votes["left"])
    results = []
    for look in range(1, design.looks + 1):
        end = round(n * look / design.looks)
        seen = {key: value[:end] for key, value in votes.items()}
        for c, part in enumerate(summaries[look - 1]["categories"]):
            verdict = part["verdict"]
            if not verdict["votes_needed"]:
                continue
            n_raters = design.raters if tastes is not None else verdict["raters_needed"]
            more = _more_votes(
                design,
                rng,
                scores,
                c,
                verdict["votes_needed"],
                n_raters,
                first_prompt=10**6 * look,
                tastes=tastes,
            )
            extended = {key: np.concatenate([seen[key], more[key]]) for key in seen}
            summary = stats.summarize(
                extended,
                n_arms=design.n_arms,
                n_categories=design.n_categories,
                n_rounds=design.n_rounds,
                seed=seed + look,
            )
            after = summary["categories"][c]["verdict"]
            best, second = np.argsort(-scores[c])[:2]
            declared = bool(after["declared"] and after["winner"] == f"arm {best}")
            results.append((declared, bool(truth[c, best, second] >= verdict["planned_difference"])))
    return results


def _more_votes(
    design: Design,
    rng: np.random.Generator,
    scores: np.ndarray,
    category: int,
    needed: int,
    n_raters: int,
    first_prompt: int,
    tastes: np.ndarray | None,
) -> dict:
    """``needed`` new votes in one category on new prompts from ``n_raters`` raters: new people with their
    own tastes, or the study's raters when ``tastes`` are theirs."""
    per_prompt = design.n_pairs * design.raters_per_comparison
    n_prompts = -(-needed // per_prompt)
    votes = study_votes(
        design,
        scores[category : category + 1],
        rng,
        lengths=np.full(design.n_arms, 300.0),
        length_effect=0.0,
        n_prompts=n_prompts,
        n_raters=max(n_raters, design.raters_per_comparison),
        tastes=tastes,
    )
    votes = {key: value[:needed] for key, value in votes.items()}
    if tastes is None:
        votes["rater"] = votes["rater"] + 10**6 * (1 + category) + first_prompt  # new people
    # Prompts of this category only: ids that the study's categories map to ``category``.
    votes["prompt"] = first_prompt * design.n_categories + votes["prompt"] * design.n_categories + category
    votes["category"] = np.full(len(votes["left"]), category)
    return votes


def length_study(design: Design, rng: np.random.Generator, seed: int) -> dict[str, bool]:
    """Equal arms, one writes longer answers and raters like length: is it declared better?"""
    scores = np.full((design.n_categories, design.n_arms), 1000.0)
    lengths = np.full(design.n_arms, 300.0)
    long_arm = design.n_arms - 1
    lengths[long_arm] *= design.long_ratio
    votes = study_votes(design, scores, rng, lengths=lengths, length_effect=design.length_effect)
    summaries = run_looks(design, votes, seed)
    name = f"arm {long_arm}"
    groups = [(s, c) for s in summaries for c in [s["overall"], *s["categories"]]]
    return {
        "raw": any(c["verdict"]["winner"] == name for _, c in groups),
        "controlled": any(c["length_controlled"]["verdict"]["winner"] == name for _, c in groups),
    }


def simulate_study(
    *, null_studies: int, effect_studies: int, length_studies: int, seed: int, design: Design | None = None
) -> dict:
    """Run the three kinds of study and report the rates the page's guarantees are about."""
    design = design or Design()
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    nulls = [null_study(design, rng, seed + i) for i in range(null_studies)]
    covered, power, same_raters = [], [], []
    for i in range(effect_studies):
        scores = true_scores(design, rng)
        truth = population_difference(design, scores, seed + 10_000 + i)
        found = effect_study(design, rng, seed + i, truth, scores)
        covered += found["covered"]
        power += found["power"]
        same_raters += found["power_same_raters"]
    lengths = [length_study(design, rng, seed + i) for i in range(length_studies)]
    return {
        "false_verdict_rate_null": _rate([n["raw"] for n in nulls]),
        "false_verdict_rate_null_length_controlled": _rate([n["controlled"] for n in nulls]),
        "coverage_difference": _rate(covered),
        "power_at_votes_needed": _rate([ok for ok, _ in power]),
        # The page's claim as stated: the chance of a verdict where the true lead is at least the planned one.
        "power_where_lead_as_planned": _rate([ok for ok, as_planned in power if as_planned]),
        "power_at_votes_needed_same_raters": _rate([ok for ok, _ in same_raters]),
        "length_flip_detected_rate": _rate([not s["controlled"] for s in lengths]),
        "length_only_raw_verdict_rate": _rate([s["raw"] for s in lengths]),
        "counts": {
            "null_studies": null_studies,
            "effect_studies": effect_studies,
            "length_studies": length_studies,
            "intervals_checked": len(covered),
            "power_checks": len(power),
            "power_checks_lead_as_planned": sum(as_planned for _, as_planned in power),
            "power_checks_same_raters": len(same_raters),
        },
        "design": design.__dict__,
        "alpha": stats.ALPHA,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _rate(values: list[bool]) -> float | None:
    return float(np.mean(values)) if values else None


class Command(BaseCommand):
    help = (
        "Simulate preference studies with known truth (null, real differences, length-only winners; prompt "
        "and rater effects; several looks and categories) through the real verdict code, and print one JSON "
        "object: false_verdict_rate_null, coverage_difference, power_at_votes_needed, "
        "length_flip_detected_rate."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--studies", type=int, default=400, help="Null studies (default 400).")
        parser.add_argument(
            "--effect-studies", type=int, help="Studies with real differences (default: half)."
        )
        parser.add_argument("--length-studies", type=int, help="Length-only studies (default: half).")
        parser.add_argument(
            "--rounds", type=int, default=200, help="Bootstrap rounds per look (default 200)."
        )
        parser.add_argument("--prompts", type=int, default=40, help="Prompts per category (default 40).")
        parser.add_argument("--seed", type=int, default=0)

    def handle(
        self,
        *args,
        studies: int,
        effect_studies,
        length_studies,
        rounds: int,
        prompts: int,
        seed: int,
        **options,
    ) -> None:
        if studies < 0 or rounds < 20 or prompts < 2:
            raise CommandError(
                "Use 0 or more studies, at least 20 bootstrap rounds and 2 prompts per category."
            )
        design = Design(n_rounds=rounds, prompts_per_category=prompts)
        report = simulate_study(
            null_studies=studies,
            effect_studies=studies // 2 if effect_studies is None else effect_studies,
            length_studies=studies // 2 if length_studies is None else length_studies,
            seed=seed,
            design=design,
        )
        self.stdout.write(json.dumps(report, indent=2))
