"""Tests for dashboard.stats: fits against references, interval coverage, agreement, bias and speed."""

import dataclasses
import json
import math

import choix
import krippendorff
import numpy as np
import pytest
from scipy import optimize
from scipy.stats import poisson

from dashboard import stats

TRUE_SCORES = np.array([950.0, 1000.0, 1030.0, 1080.0])


def centred(scores: np.ndarray) -> np.ndarray:
    return scores - np.nanmean(scores) + stats.ELO_MEAN


def winners_losers(votes: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    left_won = votes["outcome"] == stats.LEFT
    winner = np.where(left_won, votes["left"], votes["right"])
    loser = np.where(left_won, votes["right"], votes["left"])
    return list(zip(winner.tolist(), loser.tolist(), strict=True))


# --------------------------------------------------------------------------- Bradley-Terry


@pytest.mark.parametrize("ties", ["davidson", "half"])
def test_bradley_terry_matches_choix_without_ties(ties: str) -> None:
    votes = stats.simulate_votes(TRUE_SCORES, n_prompts=1500, pairs=2, tie_prob=0.0, seed=1)
    ridge = 1e-6
    fit = stats.bradley_terry(votes["left"], votes["right"], votes["outcome"], 4, ties=ties, ridge=ridge)
    reference = choix.opt_pairwise(4, winners_losers(votes), alpha=ridge)
    reference_scores = stats.ELO_MEAN + stats.ELO_SCALE * (reference - reference.mean())
    assert fit.converged
    assert np.array_equal(np.argsort(fit.scores), np.argsort(reference_scores))
    np.testing.assert_allclose(fit.scores, reference_scores, atol=1e-3)
    assert fit.scores.mean() == pytest.approx(stats.ELO_MEAN)


def test_half_ties_equal_choix_on_split_ties() -> None:
    # A tie as half a win each is a decisive vote counted twice and a tie as one win for each side,
    # with the prior doubled to match the doubled data.
    votes = stats.simulate_votes(TRUE_SCORES, n_prompts=1500, pairs=2, tie_prob=0.3, seed=2)
    ridge = 1e-6
    fit = stats.bradley_terry(votes["left"], votes["right"], votes["outcome"], 4, ties="half", ridge=ridge)
    decisive = votes["outcome"] <= stats.RIGHT
    tied = ~decisive
    data = 2 * winners_losers({k: v[decisive] for k, v in votes.items()})
    data += list(zip(votes["left"][tied].tolist(), votes["right"][tied].tolist(), strict=True))
    data += list(zip(votes["right"][tied].tolist(), votes["left"][tied].tolist(), strict=True))
    reference = choix.opt_pairwise(4, data, alpha=2 * ridge)
    np.testing.assert_allclose(fit.log_strength, reference - reference.mean(), atol=1e-5)


def test_davidson_matches_direct_optimisation() -> None:
    votes = stats.simulate_votes(TRUE_SCORES, n_prompts=400, pairs=2, tie_prob=0.25, seed=3)
    ridge = 1e-2
    fit = stats.bradley_terry(votes["left"], votes["right"], votes["outcome"], 4, ridge=ridge)
    label = stats.canonical_label(votes["left"], votes["right"], votes["outcome"])
    lower = np.minimum(votes["left"], votes["right"])
    higher = np.maximum(votes["left"], votes["right"])

    def negative_log_posterior(params: np.ndarray) -> float:
        theta, lam = params[:4], params[4]
        half = 0.5 * (theta[lower] - theta[higher])
        log_s = np.logaddexp(np.logaddexp(half, -half), lam)
        log_p = np.select([label == 0, label == 1], [half - log_s, -half - log_s], lam - log_s)
        return -log_p.sum() + 0.5 * ridge * (params @ params)

    best = optimize.minimize(negative_log_posterior, np.zeros(5), method="BFGS", options={"gtol": 1e-9})
    theta = best.x[:4] - best.x[:4].mean()
    np.testing.assert_allclose(fit.log_strength, theta, atol=1e-5)
    assert fit.nu == pytest.approx(math.exp(best.x[4]), rel=1e-5)


def test_davidson_recovers_tie_parameter() -> None:
    tie_prob = 0.3
    votes = stats.simulate_votes(TRUE_SCORES, n_prompts=10_000, pairs=2, tie_prob=tie_prob, seed=4)
    fit = stats.bradley_terry(votes["left"], votes["right"], votes["outcome"], 4)
    true_nu = 2 * tie_prob / (1 - tie_prob)
    assert fit.nu == pytest.approx(true_nu, rel=0.05)
    np.testing.assert_allclose(fit.scores, centred(TRUE_SCORES), atol=10)


def test_all_wins_stay_finite_and_unvoted_arm_is_nan() -> None:
    left = np.array([0, 1, 0, 1, 0])
    right = np.array([1, 0, 1, 0, 1])
    outcome = np.array([stats.LEFT, stats.RIGHT, stats.LEFT, stats.RIGHT, stats.LEFT])  # arm 0 always wins
    for ties in ("davidson", "half"):
        fit = stats.bradley_terry(left, right, outcome, 3, ties=ties)
        assert fit.converged
        assert np.isfinite(fit.scores[:2]).all()
        assert fit.scores[0] > fit.scores[1]
        assert math.isnan(fit.scores[2])
        assert fit.n_votes.tolist() == [5, 5, 0]
    assert 0 < stats.bradley_terry(left, right, outcome, 3).nu < 0.5  # no ties seen: the prior keeps ν > 0


def test_the_prior_keeps_one_vote_from_making_a_landslide() -> None:
    one = stats.bradley_terry(np.array([0]), np.array([1]), np.array([stats.RIGHT]), 2)
    assert 0 < one.scores[1] - one.scores[0] < 250  # a flat prior would give 754 points


def test_bad_votes_are_rejected() -> None:
    with pytest.raises(ValueError, match="itself"):
        stats.bradley_terry(np.array([1]), np.array([1]), np.array([0]), 3)
    with pytest.raises(ValueError, match="outcome"):
        stats.bradley_terry(np.array([0]), np.array([1]), np.array([4]), 3)
    with pytest.raises(ValueError, match="ridge"):
        stats.bradley_terry(np.array([0]), np.array([1]), np.array([0]), 3, ridge=0.0)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_intervals_cover_the_truth() -> None:
    """Coverage: the share of 95% intervals of per-arm centred scores (mean 1000 over arms) that contain
    the true centred score, pooled over 4 arms × 200 simulated experiments of 600 votes each."""
    truth = centred(TRUE_SCORES)
    hits = []
    for sim in range(200):
        votes = stats.simulate_votes(
            TRUE_SCORES, n_prompts=150, pairs=2, raters_per_prompt=2, tie_prob=0.2, seed=1000 + sim
        )
        boot = stats.bootstrap_bt(
            votes["left"], votes["right"], votes["outcome"], 4, votes["prompt"], n_rounds=500, seed=sim
        )
        hits.append((boot.lo <= truth) & (truth <= boot.hi))
    assert np.mean(hits) == pytest.approx(0.95, abs=0.03)


@pytest.mark.parametrize("lam", [1, 2, 13, 400])
def test_poisson_lookup_tables_match_the_distribution(lam: int) -> None:
    table = stats._poisson_table(lam)
    assert len(table) == 65536
    frequencies = np.bincount(table.astype(int)) / 65536
    np.testing.assert_allclose(frequencies, poisson.pmf(np.arange(len(frequencies)), lam), atol=1 / 65536)


def test_bootstrap_resamples_prompts_not_votes() -> None:
    votes = stats.simulate_votes(TRUE_SCORES, n_prompts=600, seed=5)
    copies = 4
    repeated = {key: np.repeat(value, copies) for key, value in votes.items()}
    args = ("left", "right", "outcome")

    def mean_width(prompt: np.ndarray, data: dict[str, np.ndarray]) -> float:
        boot = stats.bootstrap_bt(*(data[k] for k in args), 4, prompt, n_rounds=400, seed=0)
        return float(np.mean(boot.hi - boot.lo))

    original = mean_width(votes["prompt"], votes)
    # Copies of a vote on the same prompt add no information, and the intervals must not pretend they do.
    same_prompt = mean_width(repeated["prompt"], repeated)
    own_prompt = mean_width(np.arange(len(repeated["left"])), repeated)
    assert same_prompt == pytest.approx(original, rel=0.15)
    assert own_prompt == pytest.approx(original / math.sqrt(copies), rel=0.15)


def test_bootstrap_ranks_nu_and_empty_arm() -> None:
    scores = np.array([800.0, 1000.0, 1200.0, 1000.0])
    votes = stats.simulate_votes(scores, n_prompts=2000, pairs=2, tie_prob=0.3, seed=6)
    only_first_three = (votes["left"] < 3) & (votes["right"] < 3)
    data = {key: value[only_first_three] for key, value in votes.items()}
    boot = stats.bootstrap_bt(data["left"], data["right"], data["outcome"], 4, data["prompt"], n_rounds=300)
    assert boot.converged
    assert boot.rank_lo[:3].tolist() == [3, 2, 1] == boot.rank_hi[:3].tolist()
    assert math.isnan(boot.lo[3]) and math.isnan(boot.rank_lo[3])
    assert (boot.lo[:3] < boot.fit.scores[:3]).all() and (boot.fit.scores[:3] < boot.hi[:3]).all()
    assert boot.nu_lo < 2 * 0.3 / 0.7 < boot.nu_hi
    assert boot.samples.shape == (300, 4)


def test_bootstrap_is_reproducible() -> None:
    votes = stats.simulate_votes(TRUE_SCORES, n_prompts=300, seed=7)
    args = (votes["left"], votes["right"], votes["outcome"], 4, votes["prompt"])
    first = stats.bootstrap_bt(*args, n_rounds=100, seed=3)
    np.testing.assert_array_equal(first.samples, stats.bootstrap_bt(*args, n_rounds=100, seed=3).samples)
    assert not np.array_equal(first.samples, stats.bootstrap_bt(*args, n_rounds=100, seed=4).samples)


# --------------------------------------------------------------------------- win rates, verdict, bias


def test_wilson_interval_by_hand() -> None:
    z = 1.959963984540054
    p, n = 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = stats.wilson_interval(8, 10)
    assert (float(lo), float(hi)) == pytest.approx((centre - half, centre + half))
    assert (float(lo), float(hi)) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # published value for 8/10
    assert all(math.isnan(float(v)) for v in stats.wilson_interval(0, 0))


def test_win_rate_matrix_counts() -> None:
    left = np.array([0, 1, 0, 1, 2])
    right = np.array([1, 0, 1, 0, 0])
    outcome = np.array([stats.LEFT, stats.RIGHT, stats.TIE, stats.BOTH_BAD, stats.LEFT])
    table = stats.win_rate_matrix(left, right, outcome, 3)
    assert table.wins[0, 1] == 2 and table.wins[1, 0] == 0 and table.wins[2, 0] == 1
    assert table.ties[0, 1] == table.ties[1, 0] == 2
    assert table.n[0, 1] == table.n[1, 0] == 4
    assert table.rate[0, 1] == 0.75 and table.rate[1, 0] == 0.25 and table.rate[0, 2] == 0.0
    lo, hi = stats.wilson_interval(3, 4)
    assert (table.lo[0, 1], table.hi[0, 1]) == pytest.approx((float(lo), float(hi)))
    assert math.isnan(table.rate[1, 2]) and math.isnan(table.rate[0, 0])


def test_position_bias_detected_only_when_present() -> None:
    biased = stats.simulate_votes(TRUE_SCORES, n_prompts=3000, left_bias=0.4, seed=8)
    report = stats.position_bias(biased["outcome"], prompt=biased["prompt"], rater=biased["rater"])
    assert report["p_value"] < 0.05 and report["biased"] and report["ci_low"] > 0.5
    fair_votes = stats.simulate_votes(TRUE_SCORES, n_prompts=3000, seed=8)
    fair = stats.position_bias(fair_votes["outcome"], prompt=fair_votes["prompt"], rater=fair_votes["rater"])
    assert fair["p_value"] > 0.05 and not fair["biased"]
    assert fair["ci_low"] < 0.5 < fair["ci_high"]
    assert stats.position_bias(np.array([stats.TIE]))["n_decisive"] == 0


def test_one_rater_who_always_picks_left_is_not_a_bias_of_the_team() -> None:
    rng = np.random.default_rng(3)
    n = 400
    rater = rng.integers(0, 20, n)
    outcome = np.where(rater == 0, stats.LEFT, rng.integers(0, 2, n))
    independent = stats.position_bias(outcome)
    clustered = stats.position_bias(outcome, prompt=np.arange(n), rater=rater)
    assert clustered["design_effect"] > 1.5
    assert clustered["ci_high"] - clustered["ci_low"] > independent["ci_high"] - independent["ci_low"]
    # The flag and the interval say the same thing.
    assert clustered["biased"] == (not clustered["ci_low"] < 0.5 < clustered["ci_high"])


def test_clustered_variance_matches_statsmodels() -> None:
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(4)
    n = 500
    prompt, rater = rng.integers(0, 60, n), rng.integers(0, 12, n)
    y = (rng.random(n) < 0.5 + 0.1 * (rater % 3 == 0)).astype(float)
    group = np.zeros(n, np.int64)
    ones = np.ones((n, 1))
    _, one_way, _ = stats.clustered_design_effect(y, group, prompt, None, 1)
    fit = sm.OLS(y, ones).fit(cov_type="cluster", cov_kwds={"groups": prompt, "use_correction": False})
    assert one_way[0] == pytest.approx(fit.bse[0] ** 2, rel=1e-9)
    _, two_way, _ = stats.clustered_design_effect(y, group, prompt, rater, 1)

    def variance(groups: np.ndarray) -> float:
        fit = sm.OLS(y, ones).fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False})
        return float(fit.bse[0] ** 2)

    # Cameron-Gelbach-Miller two-way, kept no smaller than either one-way variance.
    expected = max(variance(np.column_stack([prompt, rater])), variance(prompt), variance(rater))
    assert two_way[0] == pytest.approx(expected, rel=1e-9)


def test_win_rate_intervals_widen_for_raters_with_their_own_taste() -> None:
    votes = stats.simulate_votes(TRUE_SCORES, n_prompts=2000, seed=6, n_raters=6, rater_sd=150)
    args = (votes["left"], votes["right"], votes["outcome"], 4)
    plain_table = stats.win_rate_matrix(*args)
    table = stats.win_rate_matrix(*args, prompt=votes["prompt"], rater=votes["rater"])
    assert np.nanmin(table.design_effect[~np.eye(4, dtype=bool)]) > 1.5
    assert np.nanmean(table.hi - table.lo) > np.nanmean(plain_table.hi - plain_table.lo)
    np.testing.assert_allclose(table.rate, plain_table.rate)


# --------------------------------------------------------------------------- verdict


def test_the_verdict_carries_its_groups_rater_inflation_and_counts() -> None:
    votes = stats.simulate_votes(TRUE_SCORES, n_prompts=600, seed=6, n_raters=6, rater_sd=150)
    summary = stats.summarize(votes, n_arms=4, n_categories=1, n_rounds=100)
    verdict = summary["overall"]["verdict"]
    expected = stats.rater_inflation(
        votes["left"], votes["right"], votes["outcome"], votes["prompt"], votes["rater"], 4
    )
    assert expected > 1.5 and verdict["rater_inflation"] == pytest.approx(expected)


def test_four_straight_wins_or_a_handful_of_votes_give_no_verdict() -> None:
    votes = {
        "left": np.array([0, 1, 0, 1]),
        "right": np.array([1, 0, 1, 0]),
        "outcome": np.array([stats.RIGHT, stats.LEFT, stats.RIGHT, stats.LEFT]),
        "prompt": np.arange(4),
        "rater": np.arange(4),
    }
    verdict = stats.summarize(votes, n_arms=2, n_categories=1, n_rounds=200)["overall"]["verdict"]
    assert verdict["leader"] == "arm 1" and verdict["winner"] is None and not verdict["declared"]
    assert verdict["message"].startswith("not enough votes yet: arm 1 and arm 0 have 4 decisive votes")


def test_sign_mixture_is_never_bolder_than_the_exact_sign_test() -> None:
    from scipy.stats import binomtest

    for n in (5, 10, 30, 100):
        for wins in range(n + 1):
            exact = binomtest(wins, n, 0.5).pvalue
            assert stats.sign_mixture_pvalue(wins, n) >= exact - 1e-12
    assert stats.sign_mixture_pvalue(4, 4) > 0.05 and stats.sign_mixture_pvalue(30, 30) < 1e-6


def test_sign_mixture_keeps_its_level_however_often_it_is_read() -> None:
    rng = np.random.default_rng(12)
    signs = rng.random((2000, 300)) < 0.5
    wins = np.cumsum(signs, axis=1)
    ever = [any(stats.sign_mixture_pvalue(int(w), n + 1) <= 0.05 for n, w in enumerate(row)) for row in wins]
    assert np.mean(ever) <= 0.05


def test_sequential_test_keeps_its_level_on_a_random_walk() -> None:
    rng = np.random.default_rng(13)
    steps = rng.normal(size=(2000, 500))
    sums = np.cumsum(steps, axis=1)
    n = np.arange(1, 501)
    z = sums / np.sqrt(n)
    ever = [
        any(stats.sequential_pvalue(float(zi), float(ni)) <= 0.05 for zi, ni in zip(row, n, strict=True))
        for row in z
    ]
    assert np.mean(ever) <= 0.05
    assert stats.sequential_pvalue(stats.sequential_threshold(100, 0.05), 100) == pytest.approx(0.05)


def test_holm_matches_statsmodels() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    expected = multitest.multipletests(p, method="holm")[1]
    np.testing.assert_allclose(stats.holm(p), expected)


def test_a_real_difference_is_declared_and_a_tie_is_not() -> None:
    scores = np.array([[900.0, 1000.0, 1150.0], [1000.0, 1000.0, 1000.0]])
    votes = stats.simulate_votes(scores, n_prompts=1200, raters_per_prompt=3, seed=10)
    summary = stats.summarize(votes, n_arms=3, n_categories=2, n_rounds=200, arm_names=["a", "b", "c"])
    clear, level = summary["categories"]
    assert clear["verdict"]["declared"] and clear["verdict"]["winner"] == "c"
    assert clear["verdict"]["runner_up"] == "b" and clear["verdict"]["difference_low"] > 0
    assert not level["verdict"]["declared"] and level["verdict"]["winner"] is None
    assert summary["settings"]["family_size"] == 3


def test_votes_needed_grows_as_the_lead_shrinks() -> None:
    def lead(difference: float, raters: int = 0) -> stats.Contest:
        return stats.Contest(0, 1, difference, difference - 55, difference + 55, 28.0, 120, 400, 0.2, 0.1, 60,
                             0.5 + difference / 400, 1.0, raters)  # fmt: skip

    needed, more = stats.votes_needed(lead(90.0), alpha=0.0125), stats.votes_needed(lead(70.0), alpha=0.0125)
    assert needed is not None and more is not None and more.votes > needed.votes > 0
    assert stats.votes_needed(lead(10.0), alpha=0.0125) is None  # level
    # The plan is for a lead shrunk toward zero, and the number it names gets there at the promised power.
    assert 0 < needed.difference < 90.0 and needed.raters is None
    f = 1 + needed.votes / 400
    z = needed.difference / (28.0 / math.sqrt(f))
    assert z >= stats.sequential_threshold(120 * f, 0.0125) + 0.84
    # New raters at the current votes per rater: 20 raters cast the 400 votes so far.
    assert stats.votes_needed(lead(90.0, raters=20), alpha=0.0125).raters == math.ceil(needed.votes / 20)
    # A standard error from 40 prompts is planned at its upper 80% bound: more votes, a smaller lead.
    from_prompts = stats.votes_needed(dataclasses.replace(lead(90.0), n_prompts=40), alpha=0.0125)
    assert from_prompts.votes > needed.votes and from_prompts.difference < needed.difference


def test_an_undecided_verdict_names_the_votes_raters_and_lead_it_plans_for() -> None:
    found = stats.Contest(0, 1, 90.0, 35.0, 145.0, 28.0, 120, 400, 0.2, 0.1, 60, 0.7, 1.0, 20)
    (verdict,) = stats.verdicts([found], ["k=8", "k=4"], family=[0], alpha=0.05)
    plan = stats.votes_needed(found, alpha=0.05)
    assert (verdict["votes_needed"], verdict["raters_needed"]) == (plan.votes, plan.raters)
    assert verdict["planned_difference"] == plan.difference
    assert verdict["message"] == (
        "no clear winner yet: k=8 leads k=4 by 90 points (95% interval 35 to 145); about "
        f"{plan.votes} more votes on new prompts, from about {plan.raters} new raters, give a verdict "
        f"with 80% probability if k=8 is truly at least {plan.difference:.0f} points ahead"
    )


def test_the_sign_test_guards_only_few_prompts() -> None:
    def found(leaning: int) -> stats.Contest:
        return stats.Contest(0, 1, 80.0, 30.0, 130.0, 20.0, 200, 600, 0.2, 0.001, leaning, 0.6)

    assert found(stats.SIGN_GUARD_PROMPTS - 1).p_value == 0.2  # both tests must reject
    assert found(stats.SIGN_GUARD_PROMPTS).p_value == 0.001  # the normal mixture alone decides
    assert stats.Contest(0, 1, 80.0, 30.0, 130.0, 20.0, 9, 600, 0.0, 0.0, 40, 0.6).p_value == 1.0


# --------------------------------------------------------------------------- style control


def test_style_fit_matches_direct_optimisation() -> None:
    from scipy import optimize

    votes = stats.simulate_votes(
        TRUE_SCORES, n_prompts=3000, pairs=2, seed=14, arm_length=[200, 250, 300, 420], length_effect=1.0
    )
    summary = stats.summarize(votes, n_arms=4, n_categories=1, n_rounds=50, ridge=1e-6)
    controlled = summary["overall"]["length_controlled"]
    pair, cls = stats._pair_class(votes["left"], votes["right"], votes["outcome"], 4)
    z = stats.style_differences(
        votes["left"], votes["right"], votes["left_length"], votes["right_length"], 0.1
    )
    lo, hi = np.triu_indices(4, 1)

    def nll(params: np.ndarray) -> float:
        theta, beta, lam = params[:4], params[4], params[5]
        d = theta[lo[pair]] - theta[hi[pair]] + beta * z
        log_s = np.logaddexp(np.logaddexp(0.5 * d, -0.5 * d), lam)
        log_p = np.where(cls == 0, 0.5 * d, np.where(cls == 1, -0.5 * d, lam)) - log_s
        return -log_p.sum() + 0.5 * 1e-6 * (params @ params)

    best = optimize.minimize(nll, np.zeros(6), method="BFGS", options={"gtol": 1e-8}).x
    assert controlled["effects"]["length"]["log_odds"] == pytest.approx(best[4], abs=1e-4)
    expected = stats.ELO_SCALE * (best[:4] - best[:4].mean()) + stats.ELO_MEAN
    np.testing.assert_allclose(controlled["scores"], expected, atol=0.05)


def test_a_winner_by_length_alone_is_not_preferred_under_length_control() -> None:
    votes = stats.simulate_votes(
        [1000.0, 1000.0], n_prompts=3000, seed=15, arm_length=[300, 600], length_effect=3.0, n_raters=40
    )
    summary = stats.summarize(votes, n_arms=2, n_categories=1, n_rounds=200, arm_names=["short", "long"])
    overall = summary["overall"]
    assert overall["verdict"]["winner"] == "long"
    controlled = overall["length_controlled"]
    assert controlled["verdict"]["winner"] is None
    assert controlled["effects"]["length"]["points_low"] > 0
    assert controlled["note"].startswith("Under length control no arm is preferred: long's lead")


# --------------------------------------------------------------------------- agreement


def test_agreement_does_not_depend_on_how_the_arms_are_numbered() -> None:
    votes = stats.simulate_votes([900.0, 1000.0, 1100.0], n_prompts=400, raters_per_prompt=3, seed=16)
    renumbered = dict(votes, left=2 - votes["left"], right=2 - votes["right"])
    alphas = [
        stats.summarize(v, n_arms=3, n_categories=1, n_rounds=20)["overall"]["krippendorff_alpha"]
        for v in (votes, renumbered)
    ]
    assert alphas[0] == pytest.approx(alphas[1])
    assert 0 < alphas[0] < 1


KRIPPENDORFF_EXAMPLE = [  # the package's (and Krippendorff's) example: raters × units, NaN missing
    [np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
    [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
    [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4],
]


def triples(raters_by_units: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rater, unit = np.nonzero(~np.isnan(raters_by_units))
    return unit, rater, raters_by_units[rater, unit]


def test_krippendorff_alpha_hand_example() -> None:
    data = np.array(KRIPPENDORFF_EXAMPLE)
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert expected == pytest.approx(0.691358, abs=1e-6)
    assert stats.krippendorff_alpha(data.T) == pytest.approx(expected)
    unit, rater, value = triples(data)
    assert stats.krippendorff_alpha(unit=unit, rater=rater, value=value) == pytest.approx(expected)


def test_krippendorff_alpha_random_data() -> None:
    rng = np.random.default_rng(9)
    for _ in range(5):
        data = rng.integers(0, 4, size=(6, 80)).astype(float)
        data[rng.random(data.shape) < 0.4] = np.nan
        expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
        unit, rater, value = triples(data)
        assert stats.krippendorff_alpha(unit=unit, rater=rater, value=value) == pytest.approx(expected)
        assert stats.krippendorff_alpha(data.T) == pytest.approx(expected)


def test_krippendorff_alpha_undefined_and_duplicates() -> None:
    one_rater = stats.krippendorff_alpha(unit=np.arange(3), rater=np.zeros(3), value=np.array([0, 1, 0]))
    assert math.isnan(one_rater)
    # A rater's second rating of a unit replaces the first.
    unit, rater, value = np.array([0, 0, 1, 1, 0]), np.array([0, 1, 0, 1, 1]), np.array([0, 1, 1, 1, 0])
    first_dropped = [0, 2, 3, 4]
    clean = stats.krippendorff_alpha(
        unit=unit[first_dropped], rater=rater[first_dropped], value=value[first_dropped]
    )
    assert stats.krippendorff_alpha(unit=unit, rater=rater, value=value) == pytest.approx(clean)


def test_rater_majority_agreement_by_hand() -> None:
    unit = np.array([0, 0, 0, 1, 1, 2])
    rater = np.array([10, 20, 30, 10, 20, 10])
    value = np.array([5, 5, 7, 5, 5, 7])
    # Unit 0: raters 10 and 20 each face others {5, 7}, a tie of modes: 1/2 each; rater 30 faces {5, 5}: 0.
    # Unit 1: full agreement. Unit 2: nobody else rated it, so it does not count.
    assert stats.rater_majority_agreement(unit, rater, value) == {10: 0.75, 20: 0.75, 30: 0.0}


def test_canonical_label_ignores_sides() -> None:
    left, right = np.array([0, 2, 2, 0, 1, 1]), np.array([2, 0, 0, 2, 0, 0])
    outcome = np.array([stats.RIGHT, stats.LEFT, stats.RIGHT, stats.LEFT, stats.TIE, stats.BOTH_BAD])
    assert stats.canonical_label(left, right, outcome).tolist() == [
        stats.HIGHER_BETTER, stats.HIGHER_BETTER, stats.LOWER_BETTER, stats.LOWER_BETTER,
        stats.CANON_TIE, stats.CANON_BOTH_BAD,
    ]  # fmt: skip


# --------------------------------------------------------------------------- exclusions and summary


def test_exclusions_are_counted() -> None:
    gold = np.array([1, 1, 0, 0, 0, 0], bool)
    fast = np.array([1, 0, 1, 0, 0, 0], bool)
    flagged = np.array([0, 0, 0, 1, 0, 0], bool)
    keep, counts = stats.apply_exclusions(gold, fast, flagged, exclude_too_fast=True)
    assert keep.tolist() == [False, False, False, False, True, True]
    assert counts == {"total": 6, "gold_failed": 2, "too_fast": 2, "flagged": 1, "excluded": 4, "kept": 2}
    keep, counts = stats.apply_exclusions(gold, fast, flagged, exclude_too_fast=False, exclude_flagged=False)
    assert keep.tolist() == [False, False, True, True, True, True]
    assert counts["excluded"] == 2 and counts["too_fast"] == 2


def test_summarize_runs_everything() -> None:
    scores = np.array([[900.0, 1000.0, 1150.0], [1000.0, 1000.0, 1000.0]])
    votes = stats.simulate_votes(scores, n_prompts=1200, raters_per_prompt=3, exclusion_rate=0.02, seed=10)
    summary = stats.summarize(votes, n_arms=3, n_categories=2, n_rounds=200, arm_names=["a", "b", "c"])
    json.dumps(summary, allow_nan=False)
    excluded = votes["gold_failed"] | votes["flagged"]
    assert summary["exclusions"]["kept"] == summary["overall"]["n_votes"] == int((~excluded).sum())
    assert sum(c["n_votes"] for c in summary["categories"]) == summary["overall"]["n_votes"]
    first, second = summary["categories"]
    assert first["verdict"]["winner"] == "c" and first["rank_low"] == [3, 2, 1]
    assert second["verdict"]["winner"] is None
    assert summary["overall"]["converged"] and first["n_both_bad"] > 0
    assert 0 < summary["overall"]["krippendorff_alpha"] < 1
    assert set(summary["overall"]["rater_agreement"]) <= set(np.unique(votes["rater"]).tolist())
    assert summary["overall"]["win_rates"]["rate"][0][0] is None
    assert summary["overall"]["length_controlled"] is None  # no lengths given


def test_summarize_with_every_vote_excluded_says_so() -> None:
    votes = stats.simulate_votes(TRUE_SCORES, n_prompts=50, seed=17)
    votes["flagged"] = np.ones(len(votes["left"]), bool)
    summary = stats.summarize(votes, n_arms=4, n_categories=1, n_rounds=20)
    assert summary["exclusions"]["kept"] == 0
    assert summary["overall"]["verdict"]["message"].startswith("not enough votes yet")
