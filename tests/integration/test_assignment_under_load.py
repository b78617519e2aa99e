"""Handing out comparisons to many raters at once, on PostgreSQL: each comparison gets exactly k votes."""

import threading

import pytest
from django.db import connection, connections
from django.db.models import Count

from dashboard import services
from dashboard.models import Lease, Rating
from evaluator.models import Comparison, Generation
from tests.factories import make_checkpoint, ready_comparisons, scheduled_experiment, store_crafted_outputs

pytestmark = pytest.mark.django_db(transaction=True)


def rate_until_done(rater, errors: list[str]) -> None:
    """As the vote view does: each vote's transaction also leases the rater's next comparison."""
    try:
        session = services.start_session(rater=rater, target=1000)
        assignment = services.next_comparison(rater=rater)
        while assignment is not None:
            after = services.vote_and_next(
                rater=rater, session=session, token=assignment.page.token, verdict="left"
            )
            assignment = after.assignment
    except Exception as exc:  # reported by the test, with the rater's name
        errors.append(f"{rater.username}: {type(exc).__name__}: {exc}")
    finally:
        connections.close_all()


def test_concurrent_raters_give_every_comparison_exactly_k_votes(
    tiny_model_path, django_user_model, raters_group
):
    if connection.vendor != "postgresql":
        pytest.skip("row locks with SKIP LOCKED are PostgreSQL's; SQLite writes one transaction at a time")
    prompts = [("routine", f"Note {i}:") for i in range(20)]
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path), depths=(1, 2, 4), prompts=prompts, raters=3, name="load"
    )
    generations = Generation.objects.filter(experiment=experiment)
    store_crafted_outputs(experiment, {g.pk: f"output {g.pk}" for g in generations})
    comparisons = ready_comparisons(experiment)
    assert len(comparisons) == 60

    raters = []
    for i in range(16):
        rater = django_user_model.objects.create_user(f"load-{i}")
        rater.groups.add(raters_group)
        raters.append(rater)
    errors: list[str] = []
    threads = [threading.Thread(target=rate_until_done, args=(rater, errors)) for rater in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []

    counts = Comparison.objects.filter(experiment=experiment).annotate(n=Count("ratings"))
    assert sorted({(c.n, c.ratings_count) for c in counts}) == [(3, 3)]
    assert not Rating.objects.values("comparison", "rater").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert not Lease.objects.filter(completed_at__isnull=True).exists()


def test_a_vote_and_a_skip_sent_together_queue_instead_of_deadlocking(
    tiny_model_path, django_user_model, raters_group
):
    """A keyboard rater can press 1 and s at once: both lock the lease before any comparison row."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite writes one transaction at a time")
    prompts = [("routine", f"Note {i}:") for i in range(10)]
    experiment = scheduled_experiment(
        make_checkpoint(tiny_model_path), depths=(1, 2), prompts=prompts, name="pair"
    )
    store_crafted_outputs(
        experiment, {g.pk: f"output {g.pk}" for g in Generation.objects.filter(experiment=experiment)}
    )
    rater = django_user_model.objects.create_user("pair")
    rater.groups.add(raters_group)
    session = services.start_session(rater=rater, target=1000)
    errors: list[str] = []

    def act(action, token: str) -> None:
        try:
            action(token)
        except services.RatingError:
            pass  # the other one came first: a refusal with a message is the expected outcome
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connections.close_all()

    def vote(token: str) -> None:
        services.vote_and_next(rater=rater, session=session, token=token, verdict="tie")

    def skip(token: str) -> None:
        services.skip_comparison(rater=rater, token=token)

    while (assignment := services.next_comparison(rater=rater)) is not None:
        pair = [threading.Thread(target=act, args=(action, assignment.page.token)) for action in (vote, skip)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join(timeout=30)
    assert errors == []
    assert not Lease.objects.filter(rater=rater, completed_at__isnull=True).exists()
