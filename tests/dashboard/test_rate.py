"""The rating page: a rater sees a ready comparison blind, votes, and the next one appears."""

import pytest
from django.urls import reverse

from dashboard.models import Lease, Rating
from evaluator.models import Comparison
from tests.factories import make_checkpoint, run_generations, scheduled_experiment, store_crafted_outputs

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4))
    run_generations(experiment)
    return experiment


def test_it_requires_login(client):
    response = client.get(reverse("rate"))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_it_refuses_users_outside_the_raters_group(client, stranger):
    client.force_login(stranger)
    assert client.get(reverse("rate")).status_code == 403


def test_it_shows_a_ready_comparison_without_naming_the_arms(client, rater, experiment):
    client.force_login(rater)
    response = client.get(reverse("rate"))
    assert response.status_code == 200
    lease = Lease.objects.get(rater=rater)
    comparison = lease.comparison
    html = response.content.decode()
    assert comparison.token in html
    for variant in experiment.variants.all():
        assert variant.name not in html
    assert f"/{comparison.pk}/" not in html


def test_a_vote_is_stored_and_the_next_comparison_follows(client, rater, experiment):
    client.force_login(rater)
    client.get(reverse("rate"))
    first = Lease.objects.get(rater=rater).comparison
    response = client.post(
        reverse("vote", args=[first.token]), {"verdict": "left"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    rating = Rating.objects.get(rater=rater)
    assert rating.comparison == first
    assert rating.verdict == "left"
    assert rating.seconds >= 0
    assert Comparison.objects.get(pk=first.pk).ratings_count == 1
    second = Lease.objects.filter(rater=rater, completed_at__isnull=True).get().comparison
    assert second != first
    assert second.token in response.content.decode()


def test_a_double_submission_stores_one_rating(client, rater, experiment):
    client.force_login(rater)
    client.get(reverse("rate"))
    token = Lease.objects.get(rater=rater).comparison.token
    for _ in range(2):
        client.post(reverse("vote", args=[token]), {"verdict": "tie"}, headers={"HX-Request": "true"})
    assert Rating.objects.filter(rater=rater).count() == 1


def test_an_unknown_verdict_is_refused_with_a_message(client, rater, experiment):
    client.force_login(rater)
    client.get(reverse("rate"))
    token = Lease.objects.get(rater=rater).comparison.token
    response = client.post(reverse("vote", args=[token]), {"verdict": "maybe"})
    assert response.status_code == 400
    assert "Unknown verdict" in response.content.decode()
    assert not Rating.objects.exists()


def test_a_comparison_gets_no_more_raters_than_asked(client, rater, second_rater, experiment):
    client.force_login(rater)
    client.get(reverse("rate"))
    client.force_login(second_rater)
    client.get(reverse("rate"))
    first = Lease.objects.get(rater=rater).comparison
    second = Lease.objects.get(rater=second_rater).comparison
    assert first != second


def test_identical_outputs_are_recorded_and_never_shown(client, rater, tiny_model_path):
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path), depths=(1, 4), prompts=[("routine", "Hi")]
    )
    run_generations(experiment)
    store_crafted_outputs(experiment, {g.pk: "the same words" for g in experiment.generations.all()})
    Comparison.objects.filter(experiment=experiment).update(ready_at=None)
    from evaluator.services import mark_ready_comparisons

    mark_ready_comparisons(
        experiment_id=experiment.pk, generation_ids=list(experiment.generations.values_list("pk", flat=True))
    )
    comparison = Comparison.objects.get(experiment=experiment)
    assert comparison.is_identical
    client.force_login(rater)
    assert "Nothing to rate right now" in client.get(reverse("rate")).content.decode()


def test_model_output_with_html_is_shown_as_text(client, rater, experiment):
    store_crafted_outputs(
        experiment,
        {
            g.pk: "<script>alert(1)</script><img src=x onerror=alert(2)>"
            for g in experiment.generations.all()[:1]
        },
    )
    client.force_login(rater)
    seen = ""
    for _ in range(experiment.comparisons.count()):
        response = client.get(reverse("rate"))
        seen += response.content.decode()
        lease = Lease.objects.filter(rater=rater, completed_at__isnull=True).first()
        if lease is None:
            break
        client.post(reverse("vote", args=[lease.comparison.token]), {"verdict": "tie"})
    assert "<script>alert(1)" not in seen
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in seen
