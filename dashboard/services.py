"""Writes of the dashboard: hand a rater the next comparison, store their vote."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from dashboard.models import Lease, Rating
from evaluator import events
from evaluator.models import Comparison, Experiment


class RatingError(Exception):
    """The vote cannot be taken; the message says why."""


@dataclass(frozen=True)
class Assignment:
    lease: Lease
    comparison: Comparison


def _open_leases(now) -> Subquery:
    return Subquery(
        Lease.objects.filter(comparison=OuterRef("pk"), completed_at__isnull=True, expires_at__gt=now)
        .order_by()
        .values("comparison")
        .annotate(n=Count("pk"))
        .values("n"),
        output_field=IntegerField(),
    )


def next_comparison(*, rater: AbstractBaseUser) -> Assignment | None:
    """The comparison this rater should judge now, leased to them, or None when nothing is waiting.

    A lease the rater already holds comes first; otherwise the highest-priority experiment's
    comparisons that still need votes, those already started first. A rater never gets the same
    comparison twice, and no comparison gets more raters than its experiment asks for.
    """
    now = timezone.now()
    held = (
        Lease.objects.filter(rater=rater, completed_at__isnull=True, expires_at__gt=now)
        .select_related(
            "comparison__prompt", "comparison__left", "comparison__right", "comparison__experiment"
        )
        .order_by("started_at")
        .first()
    )
    if held is not None:
        return Assignment(lease=held, comparison=held.comparison)
    with transaction.atomic():
        candidate = (
            Comparison.objects.ready()
            .filter(experiment__status=Experiment.Status.SCHEDULED)
            .exclude(leases__rater=rater)
            .alias(taken=F("ratings_count") + Coalesce(_open_leases(now), Value(0)))
            .filter(taken__lt=F("experiment__raters_per_comparison"))
            .order_by("-experiment__priority", "-ratings_count", "pk")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if candidate is None:
            return None
        lease = Lease.objects.create(
            comparison=candidate,
            rater=rater,
            started_at=now,
            expires_at=now + timedelta(seconds=settings.LEASE_SECONDS),
        )
    comparison = Comparison.objects.select_related("prompt", "left", "right", "experiment").get(
        pk=candidate.pk
    )
    return Assignment(lease=lease, comparison=comparison)


def submit_rating(*, rater: AbstractBaseUser, token: str, verdict: str, comment: str = "") -> Rating:
    """Store one vote. Submitting the same vote twice stores it once and returns the first."""
    if verdict not in Rating.Verdict.values:
        raise RatingError(f"Unknown verdict {verdict!r}: choose one of {', '.join(Rating.Verdict.values)}.")
    now = timezone.now()
    with transaction.atomic():
        comparison = (
            Comparison.objects.select_for_update().select_related("experiment").filter(token=token).first()
        )
        if comparison is None:
            raise RatingError("This comparison does not exist.")
        existing = Rating.objects.filter(comparison=comparison, rater=rater).first()
        if existing is not None:
            return existing
        lease = Lease.objects.filter(comparison=comparison, rater=rater, completed_at__isnull=True).first()
        if lease is None:
            raise RatingError("This comparison was not handed to you: take the next one.")
        if comparison.ratings_count >= comparison.experiment.raters_per_comparison:
            raise RatingError("This comparison has all the votes it needs: take the next one.")
        try:
            with transaction.atomic():
                rating = Rating.objects.create(
                    comparison=comparison,
                    rater=rater,
                    verdict=verdict,
                    comment=comment.strip()[:5000],
                    seconds=(now - lease.started_at).total_seconds(),
                )
        except IntegrityError:
            return Rating.objects.get(comparison=comparison, rater=rater)
        lease.completed_at = now
        lease.save(update_fields=["completed_at"])
        Comparison.objects.filter(pk=comparison.pk).update(ratings_count=F("ratings_count") + 1)
        experiment_id = comparison.experiment_id
        transaction.on_commit(lambda: events.experiment_changed(experiment_id, votes=1))
    return rating
