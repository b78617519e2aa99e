"""Handing out comparisons to many raters at once, on PostgreSQL: each comparison gets exactly k votes."""

import threading

import pytest
from django.conf import settings
from django.db import connections
from django.db.models import Count

from dashboard import services
from dashboard.models import Lease, Rating
from evaluator.models import Comparison, Generation
from tests.factories import make_checkpoint, ready_comparisons, scheduled_experiment, store_crafted_outputs

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "postgresql" not in settings.DATABASES["default"]["ENGINE"],
        reason="row locks and SKIP LOCKED are PostgreSQL's; SQLite writes one transaction at a time",
    ),
]


def crafted_experiment(model_path, name: str, prompts: int, depths: tuple[int, ...], raters: int = 1):
    """A scheduled experiment whose outputs are written directly: ready at once, no model run."""
    experiment = scheduled_experiment(
        make_checkpoint(model_path),
        depths=depths,
        prompts=[("routine", f"Note {i}:") for i in range(prompts)],
        raters=raters,
        name=name,
    )
    generations = Generation.objects.filter(experiment=experiment)
    store_crafted_outputs(experiment, {g.pk: f"output {g.pk}" for g in generations})
    return experiment


def rate_until_done(rater, errors: list[str]) -> None:
    """As the vote view does: a vote, then the rater's next comparison."""
    try:
        services.start_session(rater=rater, target=1000)
        while (assignment := services.next_comparison(rater=rater)) is not None:
            services.submit_rating(rater=rater, token=assignment.page.token, verdict="left")
    except Exception as exc:  # reported by the test, with the rater's name
        errors.append(f"{rater.username}: {type(exc).__name__}: {exc}")
    finally:
        connections.close_all()


def test_concurrent_raters_give_every_comparison_exactly_k_votes(
    tiny_model_path, django_user_model, raters_group
):
    experiment = crafted_experiment(tiny_model_path, "load", prompts=20, depths=(1, 2, 4), raters=3)
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
    assert not any(thread.is_alive() for thread in threads), "a rater was still voting after two minutes"
    assert errors == []

    counts = Comparison.objects.filter(experiment=experiment).annotate(n=Count("ratings"))
    assert sorted({(c.n, c.ratings_count) for c in counts}) == [(3, 3)]
    assert not Rating.objects.values("comparison", "rater").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert not Lease.objects.filter(completed_at__isnull=True).exists()


def test_a_vote_and_a_skip_sent_together_queue_instead_of_deadlocking(
    tiny_model_path, django_user_model, raters_group
):
    """A keyboard rater can press 1 and s at once: both lock the lease before any comparison row."""
    crafted_experiment(tiny_model_path, "pair", prompts=10, depths=(1, 2))
    rater = django_user_model.objects.create_user("pair")
    rater.groups.add(raters_group)
    services.start_session(rater=rater, target=1000)
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
        services.submit_rating(rater=rater, token=token, verdict="tie")

    def skip(token: str) -> None:
        services.skip_comparison(rater=rater, token=token)

    while (assignment := services.next_comparison(rater=rater)) is not None:
        pair = [threading.Thread(target=act, args=(action, assignment.page.token)) for action in (vote, skip)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in pair), "a vote or a skip hung for 30 s"
    assert errors == []
    assert not Lease.objects.filter(rater=rater, completed_at__isnull=True).exists()
