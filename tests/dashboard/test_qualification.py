"""The qualification round: gold checks every rater answers before an experiment's real comparisons."""

import pytest
from django.urls import reverse

from dashboard import qualification, services
from dashboard.models import Rating
from evaluator.models import Comparison
from tests.factories import make_checkpoint, run_generations, scheduled_experiment, store_crafted_outputs

pytestmark = pytest.mark.django_db
TEXT = "The meeting moves to Thursday at ten, in the small room on the second floor, as agreed."


def with_outputs(experiment):
    store_crafted_outputs(experiment, {g.pk: f"{TEXT} ({g.pk})" for g in experiment.generations.all()})
    return experiment


@pytest.fixture
def experiment(tiny_model_path):
    """2 prompts × 2 arms: 2 real comparisons and 3 qualification checks; a pass needs 2 of 3 right."""
    return with_outputs(
        scheduled_experiment(
            make_checkpoint(tiny_model_path),
            depths=(1, 4),
            raters=2,
            qualification_items=3,
            qualification_accuracy=0.6,
        )
    )


def answer(rater, comparison: Comparison, *, right: bool) -> None:
    spoiled = comparison.gold_side
    good = "right" if spoiled == "left" else "left"
    services.submit_rating(rater=rater, token=comparison.token, verdict=good if right else spoiled)


def test_scheduling_adds_the_checks_on_outputs_no_other_gold_check_uses(tiny_model_path):
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path), depths=(1, 4), gold_rate=0.5, qualification_items=2
    )

    checks = Comparison.objects.filter(experiment=experiment, qualification=True)
    gold = Comparison.objects.filter(experiment=experiment, qualification=False).exclude(gold_side="")
    assert checks.count() == 2 and gold.count() == 1
    assert all(c.gold_side in ("left", "right") and c.left_id == c.right_id for c in checks)
    assert len({c.prompt_id for c in checks}) == 2
    assert not {c.left_id for c in checks} & {c.left_id for c in gold}


def test_a_rater_answers_the_checks_first_then_gets_real_comparisons(rater, experiment):
    shown = []
    for _ in range(3):
        comparison = services.next_comparison(rater=rater).comparison
        assert comparison.qualification
        shown.append(str(qualification.progress(rater=rater, comparison=comparison)))
        answer(rater, comparison, right=True)

    real = services.next_comparison(rater=rater).comparison

    assert shown == ["Qualification: 1 of 3", "Qualification: 2 of 3", "Qualification: 3 of 3"]
    assert not real.qualification and not real.gold_side
    assert qualification.progress(rater=rater, comparison=real) is None
    assert Rating.objects.filter(rater=rater, gold_correct=True).count() == 3


def test_a_rater_below_the_pass_mark_gets_none_of_the_experiment_and_is_told_why(rater, experiment):
    for right in (True, False, False):
        answer(rater, services.next_comparison(rater=rater).comparison, right=right)

    assert services.next_comparison(rater=rater) is None
    assert qualification.failed_messages(rater=rater) == [
        "You did not pass the qualification checks of one study (1 of 3 right, 2 needed): "
        "its comparisons go to other raters."
    ]


def test_skipping_a_check_counts_as_answered_and_not_right(rater, experiment):
    services.skip_comparison(rater=rater, token=services.next_comparison(rater=rater).comparison.token)
    answer(rater, services.next_comparison(rater=rater).comparison, right=True)
    answer(rater, services.next_comparison(rater=rater).comparison, right=False)

    assert services.next_comparison(rater=rater) is None
    assert "1 of 3 right" in qualification.failed_messages(rater=rater)[0]


def test_every_rater_gets_each_check_however_many_have_answered_it(rater, second_rater, experiment):
    Comparison.objects.filter(experiment=experiment, qualification=True).update(ratings_count=2)

    handed = services.next_comparison(rater=second_rater)

    assert handed is not None and handed.comparison.qualification


def test_the_round_is_per_experiment_and_others_stay_rateable(rater, experiment, tiny_model_path):
    for _ in range(3):
        answer(rater, services.next_comparison(rater=rater).comparison, right=False)
    other = with_outputs(
        scheduled_experiment(experiment.checkpoint, depths=(1, 4), name="other", prompts=[("routine", "Hi")])
    )

    handed = services.next_comparison(rater=rater)

    assert handed is not None and handed.comparison.experiment_id == other.pk


def test_an_experiment_without_a_round_hands_out_real_comparisons_at_once(rater, tiny_model_path):
    experiment = with_outputs(scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4)))

    handed = services.next_comparison(rater=rater)

    assert handed.comparison.experiment_id == experiment.pk and not handed.comparison.qualification
    assert qualification.failed_messages(rater=rater) == []


def test_the_rating_page_says_which_check_of_the_round_is_shown(client, rater, tiny_model_path):
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path), depths=(1, 4), qualification_items=2, min_seconds_per_vote=0
    )
    run_generations(experiment)
    client.force_login(rater)
    services.start_session(rater=rater)
    assert "Qualification: 1 of 2" in client.get(reverse("rate")).content.decode()
