"""The flag review queue: flagged comparisons with their reasons, and a researcher's decision that the
results follow."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from dashboard.analysis import Exclusions, experiment_results
from evaluator import events, reviews
from evaluator.models import Comparison
from tests.dashboard.study_data import flag_one, study, vote_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(tiny_model_path):
    return study(tiny_model_path, raters=3)


@pytest.fixture
def flagged(experiment, rater):
    return flag_one(rater, "Both outputs stop <mid-sentence>\nand repeat.")


@pytest.fixture
def reviewer(django_user_model):
    user = django_user_model.objects.create_user("rex", password="password-rex", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_comparison"))
    return user


def queue(client, query: str = "") -> str:
    response = client.get(reverse("flag_queue") + (f"?{query}" if query else ""))
    assert response.status_code == 200
    return response.content.decode()


def decide(client, comparison: Comparison, decision: str, note: str = "", **headers):
    return client.post(
        reverse("flag_review", args=[comparison.pk]), {"decision": decision, "note": note}, **headers
    )


def test_it_requires_the_permission_to_change_comparisons(client, viewer, reviewer, flagged):
    client.force_login(viewer)
    assert client.get(reverse("flag_queue")).status_code == 403
    assert decide(client, flagged, "exclude").status_code == 403
    assert Comparison.objects.get(pk=flagged.pk).flag_decision == ""
    client.force_login(reviewer)
    assert client.get(reverse("flag_queue")).status_code == 200


def test_the_queue_shows_the_reasons_and_both_outputs_without_naming_arms(client, reviewer, flagged):
    client.force_login(reviewer)
    page = queue(client)
    assert "1 waiting for a decision · 0 decided" in page
    assert "Both outputs stop &lt;mid-sentence&gt;\nand repeat." in page
    assert flagged.left_text in page and flagged.right_text in page
    assert "fixed k=" not in page and "<h3>A</h3>" in page and "<h3>B</h3>" in page
    assert reverse("admin:evaluator_prompt_change", args=[flagged.prompt_id]) in page


def test_excluding_records_who_decided_and_takes_it_off_the_open_queue(client, reviewer, flagged):
    client.force_login(reviewer)
    response = decide(client, flagged, "exclude", note="Truncated by the token limit.")
    assert response.status_code == 302 and response.url.startswith(reverse("flag_queue"))
    comparison = Comparison.objects.get(pk=flagged.pk)
    assert comparison.flag_decision == "exclude" and comparison.flag_note == "Truncated by the token limit."
    assert comparison.flag_reviewed_by == reviewer and comparison.flag_reviewed_at is not None
    assert "No flagged comparison waits for a decision." in queue(client)
    decided = queue(client, "state=reviewed")
    assert "Decided: <strong>excluded from results</strong> by rex" in decided


def test_an_htmx_decision_answers_with_the_decided_item(client, reviewer, flagged):
    client.force_login(reviewer)
    response = decide(client, flagged, "fix_prompt", HTTP_HX_REQUEST="true")
    fragment = response.content.decode()
    assert response.status_code == 200
    assert fragment.lstrip().startswith(f'<article class="flagged" id="flagged-{flagged.pk}">')
    assert "Decided: <strong>prompt to fix</strong>" in fragment
    assert reverse("admin:evaluator_prompt_change", args=[flagged.prompt_id]) in fragment


def test_an_unknown_decision_is_refused_with_a_message(client, reviewer, flagged):
    client.force_login(reviewer)
    response = decide(client, flagged, "delete", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Choose a decision" in response.content.decode()
    assert Comparison.objects.get(pk=flagged.pk).flag_decision == ""
    response = client.post(reverse("flag_review", args=[flagged.pk]), {"decision": "delete"}, follow=True)
    assert "Choose a decision" in response.content.decode()


def test_only_flagged_comparisons_are_reviewed(reviewer, experiment):
    comparison = Comparison.objects.ready().filter(experiment=experiment, flag_count=0).first()
    with pytest.raises(reviews.ReviewError, match="flagged"):
        reviews.review_flagged_comparison(comparison_id=comparison.pk, decision="keep", reviewer=reviewer)


def test_a_decision_tells_live_pages_on_commit(
    reviewer, flagged, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(
        events, "experiment_changed", lambda experiment_id, **detail: sent.append(experiment_id)
    )
    with django_capture_on_commit_callbacks(execute=True):
        reviews.review_flagged_comparison(comparison_id=flagged.pk, decision="keep", reviewer=reviewer)
    assert sent == [flagged.experiment_id]


@pytest.fixture
def voted(experiment, flagged, rater, second_rater):
    """Every comparison gets a vote for k=4 from one rater; the flagged one also gets a vote from another."""
    for comparison in Comparison.objects.ready().filter(experiment=experiment):
        vote_for(second_rater, comparison, "k=4")
    return experiment


@pytest.mark.parametrize(
    ("decision", "counted"), [("", False), ("exclude", False), ("fix_prompt", False), ("keep", True)]
)
def test_the_results_follow_the_decision(reviewer, voted, flagged, decision, counted):
    if decision:
        reviews.review_flagged_comparison(comparison_id=flagged.pk, decision=decision, reviewer=reviewer)
    counts = experiment_results(voted, n_rounds=20).counts
    total = Comparison.objects.ready().filter(experiment=voted).count()
    assert counts["total"] == total
    assert counts["kept"] == (total if counted else total - 1)
    # With flagged comparisons kept in, every decision counts.
    everything = experiment_results(voted, exclusions=Exclusions(flagged=False), n_rounds=20).counts
    assert everything["kept"] == total
