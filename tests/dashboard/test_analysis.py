"""From the database to the results: who wins per category, what is left out and why, what each arm costs."""

from urllib.parse import urlencode

import numpy as np
import pytest
from django.http import QueryDict

from dashboard import analysis
from dashboard.analysis import Exclusions, experiment_results
from dashboard.services import flag_comparison, next_comparison
from evaluator.models import Comparison, Generation
from tests.dashboard.results_data import bulk_votes, experiment_with_outputs, make_raters, rate_everything

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(tiny_model_path):
    return experiment_with_outputs(tiny_model_path, depths=(1, 4), raters=3)


def group(results, key):
    return next(g for g in results.groups if g.key == key)


def row(group_, arm_name):
    return next(r for r in group_.rows if r.arm.name == arm_name)


def test_a_consistent_preference_wins_overall_and_leads_every_category(experiment):
    bulk_votes(experiment, make_raters(20), prefer="k=4", share=0.85)
    results = experiment_results(experiment, n_rounds=300)
    overall = results.overall.verdict
    assert overall["winner"] == "k=4" and overall["declared"] is True, overall
    assert overall["difference_low"] > 0 and overall["p_adjusted"] <= 0.05
    for key in ("routine", "philosophy"):
        section = group(results, key)
        # Six prompts a category: even 6 of 6 prompts leaning to k=4 is not enough evidence that philosophy
        # prompts in general favour it, however many raters voted on those six.
        assert section.verdict["leader"] == "k=4" and section.verdict["difference_low"] > 0
        assert section.verdict["winner"] is None, section.verdict
        best, worst = row(section, "k=4"), row(section, "k=1")
        assert best.score > worst.score and best.rank_low == best.rank_high == 1
        assert best.win_rate > 0.85
    total = sum(g.n_votes for g in results.groups[1:])
    assert results.overall.n_votes == total == results.counts["kept"]


def test_identical_outputs_are_counted_per_pair_and_can_count_as_ties(experiment):
    same = list(experiment.comparisons.ready().filter(gold_side="", prompt__category__slug="routine")[:2])
    Comparison.objects.filter(pk__in=[c.pk for c in same]).update(is_identical=True)
    bulk_votes(experiment, make_raters(2), prefer="k=4")
    results = experiment_results(experiment, n_rounds=100)
    routine = group(results, "routine")
    [pair] = routine.identical
    assert (pair.first.name, pair.second.name, pair.identical, pair.comparisons) == ("k=1", "k=4", 2, 6)
    assert (
        results.overall.identical[0].identical == 2
        and group(results, "philosophy").identical[0].identical == 0
    )
    assert routine.n_ties == 0 and row(routine, "k=4").win_rate == 1.0

    as_ties = experiment_results(experiment, exclusions=Exclusions(identical_as_ties=True), n_rounds=100)
    routine = group(as_ties, "routine")
    assert routine.identical_as_ties == 2 * 3  # k = 3 raters per comparison
    assert routine.n_ties == 6 and routine.n_votes == group(results, "routine").n_votes
    assert row(routine, "k=4").win_rate < 1.0
    assert as_ties.counts == results.counts  # votes of people are counted as before


def test_length_controlled_scores_come_with_the_raw_ones(experiment):
    bulk_votes(experiment, make_raters(20), prefer="k=4", share=0.85)
    results = experiment_results(experiment, n_rounds=200)
    controlled = results.overall.length_controlled
    assert controlled is not None and controlled["note"]
    for arm_row in results.overall.rows:
        assert arm_row.lc_score is not None and arm_row.lc_ci_low <= arm_row.lc_score <= arm_row.lc_ci_high


def test_without_votes_every_section_says_so(experiment):
    results = experiment_results(experiment)
    assert [g.key for g in results.groups] == ["overall", "philosophy", "routine"]
    for section in results.groups:
        assert section.verdict["message"] == "no votes yet"
        assert all(r.score is None and r.votes == 0 for r in section.rows)
    assert results.counts["total"] == 0


def test_a_close_race_reports_the_votes_still_needed(experiment):
    bulk_votes(experiment, make_raters(4), prefer="k=4", share=0.55, otherwise="k=1")
    verdict = experiment_results(experiment, n_rounds=300).overall.verdict
    assert verdict["winner"] is None
    assert verdict["message"].startswith("no clear winner yet")
    assert verdict["votes_needed"] is None or verdict["votes_needed"] > 0


@pytest.fixture
def gold_experiment(tiny_model_path):
    return experiment_with_outputs(tiny_model_path, depths=(1, 4), raters=2, gold_rate=0.5, name="gold")


def test_gold_checks_never_count_and_raters_who_fail_them_are_left_out(gold_experiment, rater, second_rater):
    careful = rate_everything(rater, prefer="k=4", gold_right=True)
    careless = rate_everything(second_rater, prefer="k=1", gold_right=False)
    gold = Comparison.objects.ready().filter(experiment=gold_experiment).exclude(gold_side="").count()
    assert gold >= 3
    preference_votes = len(careful) + len(careless) - 2 * gold

    results = experiment_results(gold_experiment, n_rounds=200)
    assert results.gold_votes == 2 * gold
    assert results.counts["total"] == preference_votes
    assert results.counts["gold_failed"] == preference_votes // 2
    assert results.counts["kept"] == preference_votes // 2
    assert row(results.overall, "k=4").win_rate == 1.0  # only the careful rater counts
    careless_row = next(r for r in results.raters if r.gold_failed)
    assert (careless_row.gold_seen, careless_row.gold_correct) == (gold, 0)

    everyone = experiment_results(gold_experiment, exclusions=Exclusions(gold_failed=False), n_rounds=200)
    assert everyone.counts["kept"] == preference_votes
    assert row(everyone.overall, "k=4").win_rate == 0.5


def test_the_gold_threshold_is_a_setting(gold_experiment, rater, settings):
    rate_everything(rater, prefer="k=4", gold_right=False)
    assert analysis.gold_failed_raters(gold_experiment) == {rater.pk}
    settings.GOLD_MIN_SEEN = 100
    assert analysis.gold_failed_raters(gold_experiment) == set()


def test_too_fast_votes_are_kept_unless_asked(experiment):
    raters = make_raters(4)
    fast = bulk_votes(experiment, raters[:1], prefer="k=1", too_fast=True)
    bulk_votes(experiment, raters[1:], prefer="k=4")
    kept = experiment_results(experiment, n_rounds=100)
    assert kept.counts["too_fast"] == fast and kept.counts["excluded"] == 0
    dropped = experiment_results(experiment, exclusions=Exclusions(too_fast=True), n_rounds=100)
    assert dropped.counts["excluded"] == fast
    assert row(dropped.overall, "k=4").win_rate == 1.0


def test_votes_on_flagged_comparisons_are_left_out_by_default(experiment, rater):
    bulk_votes(experiment, make_raters(2), prefer="k=4")
    assignment = next_comparison(rater=rater)
    flag_comparison(rater=rater, token=assignment.comparison.token, reason="the text is garbled")
    results = experiment_results(experiment, n_rounds=100)
    assert results.counts["flagged"] == 2
    assert results.counts["kept"] == results.counts["total"] - 2
    kept = experiment_results(experiment, exclusions=Exclusions(flagged=False), n_rounds=100)
    assert kept.counts["kept"] == kept.counts["total"]


def test_cost_is_what_the_outputs_measured(experiment):
    results = experiment_results(experiment)
    for section in results.groups:
        for arm_row in section.rows:
            outputs = Generation.objects.filter(
                experiment=experiment, variant_id=arm_row.arm.pk, status=Generation.Status.DONE
            )
            if section.key != "overall":
                outputs = outputs.filter(prompt__category__slug=section.key)
            speeds = [g.tokens_per_s for g in outputs]
            cost = arm_row.cost
            assert cost.outputs == len(speeds)
            assert cost.tokens_per_s == pytest.approx(np.mean(speeds))
    # Fixed depth k routes every token to exactly k experts in every layer.
    assert row(results.overall, "k=1").cost.mean_active_experts == pytest.approx(1.0)
    assert row(results.overall, "k=4").cost.mean_active_experts == pytest.approx(4.0)
    assert row(results.overall, "k=4").cost.depth_k == "4"


def test_routing_is_summed_per_arm_and_category(experiment):
    results = experiment_results(experiment)
    deep = next(a for a in results.arms if a.name == "k=4")
    summed = results.overall.routing[deep.index]
    outputs = Generation.objects.filter(experiment=experiment, variant_id=deep.pk)
    assert summed.outputs == outputs.count()
    assert summed.tokens == sum(g.routing["tokens"] for g in outputs)
    assert np.array_equal(summed.counts, np.sum([g.routing["counts"] for g in outputs], axis=0))
    assert summed.share.sum(axis=1) == pytest.approx([4.0] * summed.counts.shape[0])
    per_category = [group(results, c).routing[deep.index] for c in ("routine", "philosophy")]
    assert np.array_equal(per_category[0].counts + per_category[1].counts, summed.counts)


def test_raters_are_pseudonymous_and_measured_against_the_majority(experiment):
    agree = make_raters(2, prefix="agree")
    bulk_votes(experiment, agree, prefer="k=4")
    contrarian = make_raters(1, prefix="contrarian")
    bulk_votes(experiment, contrarian, prefer="k=1")
    results = experiment_results(experiment, n_rounds=100)
    by_name = {r.pseudonym: r for r in results.raters}
    assert all(name.startswith("rater-") for name in by_name)
    assert not any("agree" in name or "contrarian" in name for name in by_name)
    overall = [r.agreement[0] for r in results.raters]
    assert sorted(overall) == [0.0, pytest.approx(0.5), pytest.approx(0.5)]
    assert results.overall.alpha is not None and results.overall.alpha < 0.5


def test_exclusions_come_from_the_query_with_defaults():
    assert Exclusions.from_query(QueryDict("")) == Exclusions(gold_failed=True, too_fast=False, flagged=True)
    chosen = Exclusions.from_query(QueryDict("exclusions=chosen&exclude=too_fast&identical=ties"))
    assert chosen == Exclusions(gold_failed=False, too_fast=True, flagged=False, identical_as_ties=True)
    assert Exclusions.from_query(QueryDict("exclusions=chosen")) == Exclusions(False, False, False)
    assert Exclusions.from_query(QueryDict(urlencode(chosen.query_items()))) == chosen
    assert Exclusions().query_items() == []


def test_the_cost_of_an_arm_is_the_expert_slots_it_computed(tiny_model_path):
    """Dynamic depth activates fewer experts than it may; what it computed is its cost, and outputs
    stored before that was recorded count their active experts."""
    from dashboard.analysis import experiment_costs
    from evaluator.models import Generation
    from tests.factories import make_checkpoint, run_generations, scheduled_experiment

    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4))
    run_generations(experiment)
    outputs = Generation.objects.filter(experiment=experiment, variant__name="k=4")
    outputs.update(mean_active_experts=3.0, compute_experts=4.0)
    variant_id = outputs.first().variant_id
    cost = experiment_costs(experiment)[(variant_id, None)]
    assert (cost.mean_active_experts, cost.compute_experts) == (pytest.approx(3.0), pytest.approx(4.0))
    outputs.update(compute_experts=None)
    assert experiment_costs(experiment)[(variant_id, None)].compute_experts == pytest.approx(3.0)
