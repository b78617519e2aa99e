"""The rating page: a rater sees a ready comparison blind, votes, skips, flags, and works in sessions."""

from datetime import timedelta
from html import unescape

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from dashboard import services
from dashboard.models import Lease, Rating, RatingSession
from evaluator.jobs import mark_ready_comparisons
from evaluator.models import Comparison
from tests.factories import make_checkpoint, run_generations, scheduled_experiment, store_crafted_outputs

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.fixture
def experiment(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4, 8))
    run_generations(experiment)
    return experiment


@pytest.fixture
def rating_client(client, rater):
    client.force_login(rater)
    services.start_session(rater=rater, target=50)
    return client


def held_comparison(rater) -> Comparison:
    return Lease.objects.get(rater=rater, completed_at__isnull=True).comparison


def test_it_requires_login(client):
    response = client.get(reverse("rate"))
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


def test_it_refuses_users_outside_the_raters_group(client, stranger):
    client.force_login(stranger)
    assert client.get(reverse("rate")).status_code == 403


def test_without_a_session_it_offers_to_start_one(client, rater, experiment):
    client.force_login(rater)
    assert "Start rating" in client.get(reverse("rate")).content.decode()
    response = client.post(reverse("session_start"), {"target": "3"}, headers=HTMX)
    assert RatingSession.objects.get(rater=rater).target == 3
    assert held_comparison(rater).token in response.content.decode()


def test_it_shows_a_ready_comparison_without_naming_the_arms(rating_client, rater, experiment):
    response = rating_client.get(reverse("rate"))
    assert response.status_code == 200
    html = response.content.decode()
    comparison = held_comparison(rater)
    assert comparison.token in html
    for variant in experiment.variants.all():
        assert variant.name not in html


def test_a_vote_is_stored_and_the_next_comparison_follows(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    first = held_comparison(rater)
    response = rating_client.post(reverse("vote", args=[first.token]), {"verdict": "left"}, headers=HTMX)
    assert response.status_code == 200
    rating = Rating.objects.get(rater=rater)
    assert (rating.comparison, rating.verdict) == (first, "left")
    assert rating.seconds >= 0
    lease = Lease.objects.get(rater=rater, comparison=first)
    assert lease.started_at <= lease.completed_at <= rating.created_at
    assert (rating.criteria, rating.comment, rating.gold_correct) == ({}, "", None)
    assert rating.session == RatingSession.objects.get(rater=rater)
    assert Comparison.objects.get(pk=first.pk).ratings_count == 1
    second = held_comparison(rater)
    assert second != first
    assert second.token in response.content.decode()


def test_a_vote_and_the_next_comparison_stay_within_a_realistic_statement_budget(
    rating_client, rater, experiment, django_assert_max_num_queries
):
    """Every rater pays for the vote on every vote: a query per row shown would show here."""
    rating_client.get(reverse("rate"))
    token = held_comparison(rater).token
    with django_assert_max_num_queries(40):
        response = rating_client.post(reverse("vote", args=[token]), {"verdict": "left"}, headers=HTMX)
    assert held_comparison(rater).token in response.content.decode()


def test_a_double_submission_stores_one_rating(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    token = held_comparison(rater).token
    for _ in range(2):
        rating_client.post(reverse("vote", args=[token]), {"verdict": "tie"}, headers=HTMX)
    assert Rating.objects.filter(rater=rater).count() == 1


def test_an_unknown_verdict_is_refused_with_a_message(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    response = rating_client.post(reverse("vote", args=[held_comparison(rater).token]), {"verdict": "maybe"})
    assert response.status_code == 400
    assert "Unknown verdict" in response.content.decode()
    assert not Rating.objects.exists()


def test_a_fast_vote_is_kept_and_flagged(rating_client, rater, experiment):
    experiment.min_seconds_per_vote = 60
    experiment.save(update_fields=["min_seconds_per_vote"])
    rating_client.get(reverse("rate"))
    rating_client.post(reverse("vote", args=[held_comparison(rater).token]), {"verdict": "left"})
    assert Rating.objects.get(rater=rater).too_fast


def test_criteria_and_comment_are_stored_when_the_experiment_asks(rating_client, rater, experiment):
    experiment.criteria = ["clarity", "effort"]
    experiment.save(update_fields=["criteria"])
    html = rating_client.get(reverse("rate")).content.decode()
    assert "Right-sized effort" in html
    token = held_comparison(rater).token
    rating_client.post(
        reverse("vote", args=[token]),
        {"verdict": "right", "criterion-clarity": "right", "criterion-effort": "tie", "comment": " wordy "},
    )
    rating = Rating.objects.get(rater=rater)
    assert rating.criteria == {"clarity": "right", "effort": "tie"}
    assert rating.comment == "wordy"


def test_a_criterion_the_experiment_does_not_ask_about_is_refused(rating_client, rater, experiment):
    experiment.criteria = ["clarity"]
    experiment.save(update_fields=["criteria"])
    rating_client.get(reverse("rate"))
    held = held_comparison(rater)
    response = rating_client.post(
        reverse("vote", args=[held.token]), {"verdict": "left", "criterion-effort": "tie"}, headers=HTMX
    )
    assert "does not ask about 'effort'" in unescape(response.content.decode())
    assert not Rating.objects.filter(rater=rater).exists()
    assert Lease.objects.get(rater=rater, comparison=held).completed_at is None
    assert Comparison.objects.get(pk=held.pk).ratings_count == 0


def test_a_vote_outside_a_session_is_stored_without_one(rater, experiment):
    assignment = services.next_comparison(rater=rater)
    rating = services.submit_rating(rater=rater, token=assignment.page.token, verdict="both_bad")
    assert (rating.verdict, rating.session) == ("both_bad", None)
    assert Rating.objects.get(rater=rater).pk == rating.pk


def test_a_rater_holds_one_comparison_at_a_time_however_many_tabs_ask(rater, experiment):
    first = services.next_comparison(rater=rater)
    second = services.next_comparison(rater=rater)
    assert first.page.token == second.page.token
    other = Comparison.objects.ready().filter(experiment=experiment).exclude(pk=first.page.pk).first()
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        Lease.objects.create(
            comparison=other, rater=rater, started_at=now, expires_at=now + timedelta(minutes=5)
        )
    assert Lease.objects.filter(rater=rater, completed_at__isnull=True).count() == 1


def test_a_vote_that_arrives_while_the_session_is_paused_counts_in_it(rater, experiment):
    session = services.start_session(rater=rater, target=50)
    held = services.next_comparison(rater=rater).page
    RatingSession.objects.filter(pk=session.pk).update(paused_at=timezone.now())  # paused in between
    services.submit_rating(rater=rater, token=held.token, verdict="tie")
    session.refresh_from_db()
    assert session.paused_at is not None and session.ended_at is None
    assert Rating.objects.get(rater=rater).session_id == session.pk


def test_a_vote_on_an_expired_lease_is_refused_and_the_comparison_goes_back(
    rating_client, rater, second_rater, experiment
):
    rating_client.get(reverse("rate"))
    held = held_comparison(rater)
    Lease.objects.filter(rater=rater).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = rating_client.post(reverse("vote", args=[held.token]), {"verdict": "left"})
    assert response.status_code == 400
    assert "time ran out" in response.content.decode()
    assert not Rating.objects.exists()
    assert Comparison.objects.get(pk=held.pk).ratings_count == 0
    Lease.objects.filter(rater=rater).delete()
    assert services.next_comparison(rater=second_rater).page.token == held.token


def test_a_vote_after_the_session_ended_is_refused(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    held = held_comparison(rater)
    rating_client.post(reverse("session_end"), headers=HTMX)
    response = rating_client.post(reverse("vote", args=[held.token]), {"verdict": "left"})
    assert response.status_code == 400
    assert "session has ended" in response.content.decode()
    assert not Rating.objects.exists()


@pytest.mark.parametrize(
    ("action", "data", "token_suffix"),
    [
        ("vote", {"verdict": "left", "comment": "fine\x00"}, ""),
        ("flag", {"reason": "broken\x00text"}, ""),
        ("vote", {"verdict": "left"}, "\x00"),
        ("skip", {}, "%00"),
    ],
)
def test_nul_characters_are_refused_with_a_message(
    rating_client, rater, experiment, action, data, token_suffix
):
    rating_client.get(reverse("rate"))
    held = held_comparison(rater)
    url = reverse(action, args=[held.token + "x"]).replace(held.token + "x", held.token + token_suffix)
    response = rating_client.post(url, data)
    assert response.status_code == 400
    assert "NUL character" in response.content.decode()
    assert not Rating.objects.exists()
    assert Lease.objects.get(rater=rater).completed_at is None


def test_skip_hands_out_another_comparison_and_never_the_same_again(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    skipped = held_comparison(rater)
    rating_client.post(reverse("skip", args=[skipped.token]), headers=HTMX)
    assert Lease.objects.get(comparison=skipped, rater=rater).skipped
    assert held_comparison(rater) != skipped
    assert not Rating.objects.exists()


def test_flag_needs_a_reason_and_counts_on_the_comparison(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    comparison = held_comparison(rater)
    response = rating_client.post(reverse("flag", args=[comparison.token]), {"reason": " "}, headers=HTMX)
    assert "Say in a few words" in response.content.decode()
    rating_client.post(reverse("flag", args=[comparison.token]), {"reason": "garbled text"}, headers=HTMX)
    assert Comparison.objects.get(pk=comparison.pk).flag_count == 1
    assert Lease.objects.get(comparison=comparison, rater=rater).flag_reason == "garbled text"


def test_a_comparison_gets_no_more_raters_than_asked(client, rater, second_rater, experiment):
    a = services.next_comparison(rater=rater).comparison
    b = services.next_comparison(rater=second_rater).comparison
    assert a != b


def test_comparisons_with_fewest_votes_are_handed_out_first(rater, second_rater, experiment):
    experiment.raters_per_comparison = 2
    experiment.save(update_fields=["raters_per_comparison"])
    first = services.next_comparison(rater=rater).comparison
    services.submit_rating(rater=rater, token=first.token, verdict="left")
    assert services.next_comparison(rater=second_rater).comparison.ratings_count == 0


def test_a_rater_limited_to_experiments_sees_only_those(rater, experiment, tiny_model_path):
    from dashboard.models import RaterProfile

    other = scheduled_experiment(experiment.checkpoint, depths=(2, 4), name="other")
    run_generations(other)
    other.priority = 10
    other.save(update_fields=["priority"])
    RaterProfile.objects.create(user=rater).experiments.set([experiment])
    assert services.next_comparison(rater=rater).comparison.experiment == experiment


def test_higher_priority_experiments_are_rated_first(rater, experiment):
    other = scheduled_experiment(experiment.checkpoint, depths=(2, 4), name="urgent")
    run_generations(other)
    other.priority = 5
    other.save(update_fields=["priority"])
    assert services.next_comparison(rater=rater).comparison.experiment == other


def test_a_session_pauses_resumes_and_ends_with_a_summary(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    rating_client.post(reverse("vote", args=[held_comparison(rater).token]), {"verdict": "left"})
    html = rating_client.post(reverse("session_pause"), headers=HTMX).content.decode()
    assert "Paused" in html and not Lease.objects.filter(rater=rater, completed_at__isnull=True).exists()
    html = rating_client.post(reverse("session_resume"), headers=HTMX).content.decode()
    assert held_comparison(rater).token in html
    html = rating_client.post(reverse("session_end"), headers=HTMX).content.decode()
    assert "Session summary" in html and "1 of 50" in html


def test_a_session_ends_by_itself_at_its_target(client, rater, experiment):
    client.force_login(rater)
    services.start_session(rater=rater, target=1)
    client.get(reverse("rate"))
    html = client.post(
        reverse("vote", args=[held_comparison(rater).token]), {"verdict": "left"}, headers=HTMX
    )
    assert "Session summary" in html.content.decode()


def test_gold_checks_are_unmarked_and_scored(rater, tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4), gold_rate=0.5)
    run_generations(experiment)
    gold = Comparison.objects.filter(experiment=experiment).exclude(gold_side="")
    assert gold.exists() and all(c.gold_text and c.gold_text != c.left.text for c in gold)
    services.start_session(rater=rater)
    while (assignment := services.next_comparison(rater=rater)) is not None:
        c = assignment.comparison
        good = {"left": "right", "right": "left"}.get(c.gold_side, "left")
        services.submit_rating(rater=rater, token=c.token, verdict=good)
    assert Rating.objects.filter(gold_correct=True).count() == gold.count()
    summary = services.session_summary(services.active_session(rater=rater))
    assert summary.gold_accuracy == 1.0


def test_identical_outputs_are_recorded_and_never_shown(rating_client, rater, tiny_model_path):
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path), depths=(1, 4), prompts=[("routine", "Hi")]
    )
    run_generations(experiment)
    store_crafted_outputs(experiment, {g.pk: "the same words" for g in experiment.generations.all()})
    Comparison.objects.filter(experiment=experiment).update(ready_at=None)
    mark_ready_comparisons(
        experiment_id=experiment.pk, generation_ids=list(experiment.generations.values_list("pk", flat=True))
    )
    assert Comparison.objects.get(experiment=experiment).is_identical
    assert "Nothing to rate right now" in rating_client.get(reverse("rate")).content.decode()


def test_near_identical_outputs_show_their_differences(rating_client, rater, tiny_model_path):
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path), depths=(1, 4), prompts=[("routine", "Hi")]
    )
    run_generations(experiment)
    a, b = experiment.generations.all()
    store_crafted_outputs(
        experiment,
        {a.pk: "Thanks for the note, see you Monday.", b.pk: "Thanks for the note, see you Friday."},
    )
    Comparison.objects.filter(experiment=experiment).update(ready_at=None)
    mark_ready_comparisons(experiment_id=experiment.pk, generation_ids=[a.pk, b.pk])
    html = rating_client.get(reverse("rate")).content.decode()
    assert "<mark>Monday.</mark>" in html and "<mark>Friday.</mark>" in html


def test_model_output_with_html_is_shown_as_text(rating_client, rater, experiment):
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    store_crafted_outputs(experiment, {g.pk: hostile for g in experiment.generations.all()[:1]})
    seen = ""
    for _ in range(experiment.comparisons.count()):
        seen += rating_client.get(reverse("rate")).content.decode()
        lease = Lease.objects.filter(rater=rater, completed_at__isnull=True).first()
        if lease is None:
            break
        rating_client.post(reverse("vote", args=[lease.comparison.token]), {"verdict": "tie"})
    assert "<script>alert(1)" not in seen and "<img src=x" not in seen
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in seen


def test_a_vote_over_k_writes_nothing(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    held = held_comparison(rater)
    Comparison.objects.filter(pk=held.pk).update(ratings_count=experiment.raters_per_comparison)
    response = rating_client.post(reverse("vote", args=[held.token]), {"verdict": "left"}, headers=HTMX)
    assert "has all the votes it needs" in response.content.decode()
    assert not Rating.objects.filter(rater=rater).exists()
    assert Lease.objects.get(rater=rater, comparison=held).completed_at is None
    assert Comparison.objects.get(pk=held.pk).ratings_count == experiment.raters_per_comparison


def test_without_javascript_every_form_carries_its_csrf_token(rater, experiment):
    """htmx sends the token in a header; a plain form post (no script) relies on the hidden field."""
    import re

    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(rater)
    services.start_session(rater=rater, target=5)
    html = client.get(reverse("rate")).content.decode()
    forms = re.findall(r"<form [^>]*method=\"post\".*?</form>", html, re.S)
    assert len(forms) >= 5
    assert all('name="csrfmiddlewaretoken"' in form for form in forms)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    vote_url = re.search(r'<form class="verdicts" method="post" action="([^"]+)"', html).group(1)
    response = client.post(vote_url, {"verdict": "tie", "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and Rating.objects.filter(rater=rater).count() == 1
    assert client.post(vote_url, {"verdict": "tie"}).status_code == 403  # and without it, refused


def test_htmx_posts_carry_the_token_in_a_header(rater, experiment):
    """The page's <body> gives htmx the token (hx-headers): a post with the header alone is accepted."""
    import re

    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(rater)
    services.start_session(rater=rater, target=5)
    html = client.get(reverse("rate")).content.decode()
    token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', html).group(1)
    headers = {**HTMX, "X-CSRFToken": token}
    for _ in range(2):
        vote_url = re.search(r'<form class="verdicts" method="post" action="([^"]+)"', html).group(1)
        response = client.post(vote_url, {"verdict": "tie"}, headers=headers)
        assert response.status_code == 200
        html = response.content.decode()
    assert Rating.objects.filter(rater=rater).count() == 2
    assert client.post(vote_url, {"verdict": "tie"}, headers=HTMX).status_code == 403  # no header: refused


def test_a_session_counts_its_own_votes_and_remembers_the_raters_earlier_ones(rater, tiny_model_path):
    """The rater's total is the votes before the session plus the session's: a vote counts only its
    session's rows, however many the rater cast before. The migration fills in stored sessions."""
    import importlib

    from django.apps import apps

    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4, 8))
    run_generations(experiment)
    sessions = []
    for target in (2, 1, 5):
        sessions.append(services.start_session(rater=rater, target=target))
        for _ in range(min(target, 2)):
            page = services.next_comparison(rater=rater).page
            services.submit_rating(rater=rater, token=page.token, verdict="tie")
    assert [s.votes_before for s in sessions] == [0, 2, 3]
    assert services.session_summary(sessions[2]).all_votes == 5
    assert services.session_summary(sessions[2]).done == 2

    RatingSession.objects.update(votes_before=0)
    migration = importlib.import_module("dashboard.migrations.0002_session_votes_before")
    migration.count_earlier_votes(apps, None)
    stored = RatingSession.objects.order_by("started_at").values_list("votes_before", flat=True)
    assert list(stored) == [0, 2, 3]


def test_undo_takes_the_last_vote_back_and_hands_its_comparison_out_again(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    voted = held_comparison(rater)
    rating_client.post(reverse("vote", args=[voted.token]), {"verdict": "left"}, headers=HTMX)
    next_one = held_comparison(rater)
    html = rating_client.post(reverse("undo_vote"), headers=HTMX).content.decode()
    assert not Rating.objects.filter(rater=rater).exists()
    assert Comparison.objects.get(pk=voted.pk).ratings_count == 0
    assert held_comparison(rater) == voted and voted.token in html
    assert not Lease.objects.filter(rater=rater, comparison=next_one).exists()  # back in the pool
    rating_client.post(reverse("vote", args=[voted.token]), {"verdict": "right"}, headers=HTMX)
    assert Rating.objects.get(rater=rater).verdict == "right"


def test_a_vote_stands_once_another_rater_voted_on_its_comparison(rater, second_rater, experiment):
    experiment.raters_per_comparison = 2
    experiment.save(update_fields=["raters_per_comparison"])
    services.start_session(rater=rater)
    mine = services.next_comparison(rater=rater).page
    services.submit_rating(rater=rater, token=mine.token, verdict="left")
    Lease.objects.filter(rater=rater, completed_at__isnull=True).delete()
    now = timezone.now()
    Lease.objects.create(
        comparison_id=mine.pk, rater=second_rater, started_at=now, expires_at=now + timedelta(minutes=5)
    )
    services.submit_rating(rater=second_rater, token=mine.token, verdict="right")
    with pytest.raises(services.RatingError, match="your vote stands"):
        services.undo_last_vote(rater=rater)
    assert Rating.objects.filter(comparison_id=mine.pk).count() == 2


def test_undo_of_the_vote_that_ended_the_session_lets_it_go_on(client, rater, experiment):
    client.force_login(rater)
    services.start_session(rater=rater, target=1)
    client.get(reverse("rate"))
    voted = held_comparison(rater)
    html = client.post(
        reverse("vote", args=[voted.token]), {"verdict": "left"}, headers=HTMX
    ).content.decode()
    assert "Session summary" in html and "Undo last vote" in html
    html = client.post(reverse("undo_vote"), headers=HTMX).content.decode()
    assert voted.token in html
    assert services.active_session(rater=rater) is not None


def test_the_panel_lists_the_sessions_last_votes_without_naming_arms(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    for verdict in ("left", "tie"):
        token = held_comparison(rater).token
        html = rating_client.post(reverse("vote", args=[token]), {"verdict": verdict}, headers=HTMX).content
    html = html.decode()
    assert "Your last votes in this session" in html
    assert html.index("tie") < html.index("A better")  # newest first
    for variant in experiment.variants.all():
        assert variant.name not in html


def test_time_away_from_the_page_is_not_counted(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    held = held_comparison(rater)
    Lease.objects.filter(rater=rater).update(started_at=timezone.now() - timedelta(seconds=600))
    rating_client.post(reverse("vote", args=[held.token]), {"verdict": "left", "away_seconds": "590"})
    rating = Rating.objects.get(rater=rater)
    assert rating.away_seconds == pytest.approx(590)
    assert rating.seconds == pytest.approx(10, abs=2)


def test_time_away_cannot_exceed_the_time_since_the_hand_out(rating_client, rater, experiment):
    rating_client.get(reverse("rate"))
    held = held_comparison(rater)
    rating_client.post(reverse("vote", args=[held.token]), {"verdict": "left", "away_seconds": "1e9"})
    rating = Rating.objects.get(rater=rater)
    assert rating.seconds == 0 and rating.too_fast


def test_a_too_fast_vote_is_kept_and_the_rater_is_told(rating_client, rater, experiment):
    experiment.min_seconds_per_vote = 60
    experiment.save(update_fields=["min_seconds_per_vote"])
    html = rating_client.get(reverse("rate")).content.decode()
    assert 'data-min-seconds="60"' in html and "data-reading" in html
    token = held_comparison(rater).token
    html = rating_client.post(
        reverse("vote", args=[token]), {"verdict": "left"}, headers=HTMX
    ).content.decode()
    assert "under the reading time this study asks for" in html
    assert Rating.objects.get(rater=rater).too_fast
