"""Writes of the dashboard: hand a rater the next comparison, take their vote, skip or flag, sessions."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, F, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from dashboard.models import Lease, Rating, RatingSession
from evaluator import events
from evaluator.models import CRITERIA, Comparison, Experiment

DEFAULT_SESSION_TARGET = 20
CRITERION_VERDICTS = ("left", "right", "tie")


class RatingError(Exception):
    """The action cannot be taken; the message says why and what to do."""


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


def _with_outputs(queryset):
    return queryset.select_related(
        "comparison__prompt", "comparison__left", "comparison__right", "comparison__experiment"
    )


def next_comparison(*, rater: AbstractBaseUser) -> Assignment | None:
    """The comparison this rater should judge now, leased to them, or None when nothing is waiting.

    A lease the rater already holds comes first; otherwise the highest-priority experiment's
    comparisons that still need votes, those already started first. A rater never gets the same
    comparison twice, no comparison gets more raters than its experiment asks for, and a rater limited
    to some experiments gets only theirs. Rows another request is leasing right now are skipped.
    """
    now = timezone.now()
    held = _with_outputs(Lease.objects.filter(rater=rater, completed_at__isnull=True, expires_at__gt=now))
    held = held.order_by("started_at").first()
    if held is not None:
        return Assignment(lease=held, comparison=held.comparison)
    candidates = (
        Comparison.objects.ready()
        .filter(experiment__status=Experiment.Status.SCHEDULED)
        .exclude(leases__rater=rater)
        .alias(taken=F("ratings_count") + Coalesce(_open_leases(now), Value(0)))
        .filter(taken__lt=F("experiment__raters_per_comparison"))
    )
    profile = getattr(rater, "rater_profile", None)
    if profile is not None and profile.experiments.exists():
        candidates = candidates.filter(experiment__in=profile.experiments.all())
    with transaction.atomic():
        candidate = (
            candidates.order_by("-experiment__priority", "-ratings_count", "pk")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if candidate is None:
            return None
        try:
            with transaction.atomic():
                lease = Lease.objects.create(
                    comparison=candidate,
                    rater=rater,
                    started_at=now,
                    expires_at=now + timedelta(seconds=settings.LEASE_SECONDS),
                )
        except IntegrityError:
            return None
    lease = _with_outputs(Lease.objects.filter(pk=lease.pk)).get()
    return Assignment(lease=lease, comparison=lease.comparison)


def _lease_for_update(rater: AbstractBaseUser, token: str) -> tuple[Comparison, Lease | None]:
    comparison = (
        Comparison.objects.select_for_update()
        .select_related("experiment", "left", "right")
        .filter(token=token)
    )
    comparison = comparison.first()
    if comparison is None:
        raise RatingError("This comparison does not exist.")
    lease = Lease.objects.select_for_update().filter(comparison=comparison, rater=rater).first()
    return comparison, lease


def _clean_criteria(experiment: Experiment, criteria: dict[str, str]) -> dict[str, str]:
    cleaned = {}
    for name, value in criteria.items():
        if not value:
            continue
        if name not in experiment.criteria or name not in CRITERIA:
            raise RatingError(f"This experiment does not ask about {name!r}.")
        if value not in CRITERION_VERDICTS:
            raise RatingError(f"{CRITERIA[name]}: choose A, B or tie.")
        cleaned[name] = value
    return cleaned


def submit_rating(
    *,
    rater: AbstractBaseUser,
    token: str,
    verdict: str,
    comment: str = "",
    criteria: dict[str, str] | None = None,
) -> Rating:
    """Store one vote. Submitting the same vote twice stores it once and returns the first."""
    if verdict not in Rating.Verdict.values:
        raise RatingError(f"Unknown verdict {verdict!r}: choose one of {', '.join(Rating.Verdict.values)}.")
    now = timezone.now()
    with transaction.atomic():
        comparison, lease = _lease_for_update(rater, token)
        existing = Rating.objects.filter(comparison=comparison, rater=rater).first()
        if existing is not None:
            return existing
        if lease is None or lease.completed_at is not None:
            raise RatingError("This comparison was not handed to you, or you skipped it: take the next one.")
        experiment = comparison.experiment
        if comparison.ratings_count >= experiment.raters_per_comparison:
            raise RatingError("This comparison has all the votes it needs: take the next one.")
        seconds = (now - lease.started_at).total_seconds()
        gold_correct = None
        if comparison.is_gold:
            good_side = "right" if comparison.gold_side == "left" else "left"
            gold_correct = verdict == good_side
        rating = Rating.objects.create(
            comparison=comparison,
            rater=rater,
            verdict=verdict,
            comment=comment.strip()[:5000],
            criteria=_clean_criteria(experiment, criteria or {}),
            seconds=seconds,
            too_fast=seconds < experiment.min_seconds_per_vote,
            gold_correct=gold_correct,
            session=active_session(rater=rater),
        )
        lease.completed_at = now
        lease.save(update_fields=["completed_at"])
        Comparison.objects.filter(pk=comparison.pk).update(ratings_count=F("ratings_count") + 1)
        experiment_id = comparison.experiment_id
        transaction.on_commit(lambda: events.experiment_changed(experiment_id, votes=1))
    _end_session_at_target(rater)
    return rating


def skip_comparison(*, rater: AbstractBaseUser, token: str) -> None:
    """Give the comparison back for others; this rater will not see it again."""
    with transaction.atomic():
        _, lease = _lease_for_update(rater, token)
        if lease is None:
            raise RatingError("This comparison was not handed to you: take the next one.")
        if lease.completed_at is None:
            lease.completed_at = timezone.now()
            lease.skipped = True
            lease.save(update_fields=["completed_at", "skipped"])


def flag_comparison(*, rater: AbstractBaseUser, token: str, reason: str) -> None:
    """Report a broken or unratable comparison; flagged comparisons can be excluded from results."""
    reason = reason.strip()
    if not reason:
        raise RatingError("Say in a few words what is wrong with this comparison, then flag it.")
    with transaction.atomic():
        comparison, lease = _lease_for_update(rater, token)
        if lease is None:
            raise RatingError("This comparison was not handed to you: take the next one.")
        if lease.completed_at is None:
            lease.completed_at = timezone.now()
            lease.flag_reason = reason[:2000]
            lease.save(update_fields=["completed_at", "flag_reason"])
            Comparison.objects.filter(pk=comparison.pk).update(flag_count=F("flag_count") + 1)


def active_session(*, rater: AbstractBaseUser) -> RatingSession | None:
    return RatingSession.objects.filter(rater=rater, ended_at__isnull=True).order_by("-started_at").first()


def start_session(*, rater: AbstractBaseUser, target: int = DEFAULT_SESSION_TARGET) -> RatingSession:
    if not 1 <= target <= 1000:
        raise RatingError("A session's target is between 1 and 1000 comparisons.")
    with transaction.atomic():
        now = timezone.now()
        RatingSession.objects.filter(rater=rater, ended_at__isnull=True).update(ended_at=now)
        return RatingSession.objects.create(rater=rater, target=target, started_at=now)


def pause_session(*, rater: AbstractBaseUser) -> RatingSession:
    session = active_session(rater=rater)
    if session is None:
        raise RatingError("There is no session to pause.")
    if session.paused_at is None:
        session.paused_at = timezone.now()
        session.save(update_fields=["paused_at"])
        # The comparison on screen goes back to the pool rather than waiting out its lease.
        Lease.objects.filter(rater=rater, completed_at__isnull=True).delete()
    return session


def resume_session(*, rater: AbstractBaseUser) -> RatingSession:
    session = active_session(rater=rater)
    if session is None:
        raise RatingError("There is no session to resume: start one.")
    if session.paused_at is not None:
        session.paused_seconds += (timezone.now() - session.paused_at).total_seconds()
        session.paused_at = None
        session.save(update_fields=["paused_seconds", "paused_at"])
    return session


def end_session(*, rater: AbstractBaseUser) -> RatingSession | None:
    session = active_session(rater=rater)
    if session is not None:
        if session.paused_at is not None:
            resume_session(rater=rater)
            session.refresh_from_db()
        session.ended_at = timezone.now()
        session.save(update_fields=["ended_at"])
    return session


def _end_session_at_target(rater: AbstractBaseUser) -> None:
    session = active_session(rater=rater)
    if session is not None and session.ratings.count() >= session.target:
        end_session(rater=rater)


@dataclass(frozen=True)
class SessionSummary:
    done: int
    target: int
    seconds: float
    gold_seen: int
    gold_correct: int

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None


def session_summary(session: RatingSession) -> SessionSummary:
    end = session.ended_at or session.paused_at or timezone.now()
    counts = session.ratings.aggregate(
        done=Count("pk"),
        gold_seen=Count("pk", filter=Q(gold_correct__isnull=False)),
        gold_correct=Count("pk", filter=Q(gold_correct=True)),
    )
    return SessionSummary(
        done=counts["done"],
        target=session.target,
        seconds=max(0.0, (end - session.started_at).total_seconds() - session.paused_seconds),
        gold_seen=counts["gold_seen"],
        gold_correct=counts["gold_correct"],
    )
