"""Writes of the dashboard: hand a rater the next comparison, take their vote, skip or flag, sessions.

Two invariants hold under any number of raters at once (docs/ARCHITECTURE.md):
- a comparison never gets more votes than its experiment's raters_per_comparison: the vote raises the
  count only while it is under k, in the same UPDATE;
- a request locks the rater's lease before it touches a comparison row, so a rater's vote, skip and flag
  sent together queue instead of deadlocking, and a pick skips rows other raters are leasing.
"""

import math
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from dashboard import qualification
from dashboard.models import Lease, RaterProfile, Rating, RatingSession
from evaluator import events
from evaluator.models import CRITERIA, Comparison, Experiment

DEFAULT_SESSION_TARGET = 20
CRITERION_VERDICTS = ("left", "right", "tie")
PICK_ATTEMPTS = 5  # picks undone (leases committed meanwhile put them over k) before giving up
MAX_COMMENT = 5000


class RatingError(Exception):
    """The action cannot be taken; the message says why and what to do."""


def check_text(value: str, what: str) -> str:
    """Text a rater sends (a comment, a reason, a token): PostgreSQL stores no NUL character."""
    if "\x00" in value:
        raise RatingError(f"The {what} contains a NUL character: remove it and send again.")
    return value


@dataclass(frozen=True)
class ComparisonPage:
    """What the rating page shows of a comparison: the prompt, the two outputs as sides A and B (a gold
    check's degraded copy in its place), the experiment's guidelines and criteria. Nothing names an arm."""

    pk: int
    token: str
    experiment_id: int
    raters_per_comparison: int
    prompt: str
    left_text: str
    right_text: str
    guidelines: str
    criteria: tuple[tuple[str, str], ...]
    min_seconds: float  # the reading time the experiment asks for before a vote
    qualification: bool  # a check of the qualification round

    @classmethod
    def of(cls, comparison: Comparison) -> "ComparisonPage":
        experiment = comparison.experiment
        return cls(
            pk=comparison.pk,
            token=comparison.token,
            experiment_id=experiment.pk,
            raters_per_comparison=experiment.raters_per_comparison,
            prompt=comparison.prompt.text,
            left_text=comparison.left_text,
            right_text=comparison.right_text,
            guidelines=experiment.guidelines,
            criteria=tuple((name, CRITERIA[name]) for name in experiment.criteria or () if name in CRITERIA),
            min_seconds=experiment.min_seconds_per_vote,
            qualification=comparison.qualification,
        )


@dataclass(frozen=True)
class Assignment:
    lease_id: int
    page: ComparisonPage

    @property
    def comparison(self) -> Comparison:
        return Comparison.objects.get(pk=self.page.pk)


def _page(comparison_id: int) -> ComparisonPage:
    comparison = Comparison.objects.select_related("experiment", "prompt", "left", "right").get(
        pk=comparison_id
    )
    return ComparisonPage.of(comparison)


def _held_lease(rater: AbstractBaseUser, now) -> Lease | None:
    return Lease.objects.filter(rater=rater, completed_at__isnull=True, expires_at__gt=now).first()


def _open_leases(now) -> Q:
    return Q(completed_at__isnull=True, expires_at__gt=now)


def rateable_experiments(*, rater: AbstractBaseUser) -> list[Experiment]:
    """Experiments whose comparisons `rater` may be handed, highest priority first (of equal ones the
    older first); a rater limited to some experiments gets only those."""
    limits = RaterProfile.experiments.through.objects.filter(raterprofile__user=rater)
    return list(
        Experiment.objects.filter(status=Experiment.Status.SCHEDULED)
        .filter(~Exists(limits) | Exists(limits.filter(experiment=OuterRef("pk"))))
        .order_by("-priority", "pk")
    )


def rateable_comparisons(*, rater: AbstractBaseUser, experiment: Experiment, now):
    """The experiment's comparisons `rater` may be handed now, in hand-out order: fewest votes first,
    then the random key drawn at scheduling, so the order says nothing about arms, prompts or categories.

    A comparison qualifies while its votes and other raters' open leases stay under k and this rater has
    never held it. The order follows the index `comparison_hand_out`, so the database stops at the first
    comparison that qualifies instead of weighing them all.
    """
    # The qualification round (dashboard.qualification): while it lasts for this rater, only its checks.
    checks = qualification.checks_for(rater=rater, experiment=experiment)
    if checks is not None:
        return checks
    k = experiment.raters_per_comparison
    open_leases = (
        Lease.objects.filter(_open_leases(now), comparison=OuterRef("pk"))
        .order_by()
        .values("comparison")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Comparison.objects.ready()
        .filter(experiment=experiment, qualification=False, ratings_count__lt=k)
        .exclude(Exists(Lease.objects.filter(comparison=OuterRef("pk"), rater=rater)))
        .annotate(open_leases=Coalesce(Subquery(open_leases), 0))
        .filter(open_leases__lt=k - F("ratings_count"))
        .order_by("ratings_count", "order_key")
    )


def next_comparison(*, rater: AbstractBaseUser) -> Assignment | None:
    """The comparison this rater should judge now, leased to them, or None when nothing is waiting.

    A lease the rater holds comes first. Otherwise the first rateable comparison is locked (rows other
    raters are leasing right now are skipped) and leased. The pick saw the open leases as they were when
    its statement began; a lease committed since then on the same row is caught by counting again after
    the insert, and the pick is undone and made again.
    """
    now = timezone.now()
    with transaction.atomic():
        held = Lease.objects.select_for_update().filter(rater=rater, completed_at__isnull=True).first()
        if held is not None:
            if held.expires_at > now:
                return Assignment(lease_id=held.pk, page=_page(held.comparison_id))
            held.delete()  # expired: the comparison may be another rater's by now
        for experiment in rateable_experiments(rater=rater):
            for _ in range(PICK_ATTEMPTS):
                comparison = (
                    rateable_comparisons(rater=rater, experiment=experiment, now=now)
                    .select_related("experiment", "prompt", "left", "right")
                    .select_for_update(skip_locked=True, of=("self",))
                    .first()
                )
                if comparison is None:
                    break
                try:
                    with transaction.atomic():
                        lease = Lease.objects.create(
                            comparison=comparison,
                            rater=rater,
                            started_at=now,
                            expires_at=now + timedelta(seconds=settings.LEASE_SECONDS),
                        )
                except IntegrityError:
                    # Another request of this rater (a second tab) leased one just now: show that one.
                    held = _held_lease(rater, now)
                    return Assignment(lease_id=held.pk, page=_page(held.comparison_id)) if held else None
                taken = Lease.objects.filter(_open_leases(now), comparison=comparison).count()
                if (
                    comparison.qualification  # every rater answers each check: no k
                    or comparison.ratings_count + taken <= experiment.raters_per_comparison
                ):
                    return Assignment(lease_id=lease.pk, page=ComparisonPage.of(comparison))
                lease.delete()
    return None


def _lease_for_update(rater: AbstractBaseUser, token: str) -> Lease | None:
    """The rater's lease on the comparison `token`, locked: a request's first lock (see the module)."""
    check_text(token, "address")
    return (
        Lease.objects.select_for_update(of=("self",))
        .select_related("comparison__experiment")
        .filter(comparison__token=token, rater=rater)
        .first()
    )


def _no_lease_error(rater: AbstractBaseUser, token: str) -> RatingError:
    if not Comparison.objects.filter(token=token).exists():
        return RatingError("This comparison does not exist.")
    if active_session(rater=rater) is None and RatingSession.objects.filter(rater=rater).exists():
        return RatingError("Your rating session has ended: start a new one to keep rating.")
    return RatingError("This comparison was not handed to you, or you gave it back: take the next one.")


def _check_open(lease: Lease, now) -> None:
    if lease.expires_at <= now:
        minutes = round(settings.LEASE_SECONDS / 60)
        raise RatingError(
            f"This comparison was yours for {minutes} minutes and that time ran out: it may be another "
            "rater's now, so the vote was not counted. Take the next one."
        )


def _clean_criteria(asked: list[str], criteria: dict[str, str]) -> dict[str, str]:
    """The criterion verdicts given, checked against the criteria the experiment asks about."""
    cleaned = {}
    for name, value in criteria.items():
        if not value:
            continue
        if name not in asked or name not in CRITERIA:
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
    away_seconds: float = 0.0,
) -> Rating:
    """Store one vote in the rater's active session (which ends at its target).

    The same vote sent twice (a double click, a retried request) is stored once and the first is
    returned. A vote on an expired lease, a lease given back, or after the session ended is refused.
    `away_seconds`, the time the page reports it was hidden, is not counted as time spent on the vote
    (it cannot exceed the time since the hand-out).
    """
    if verdict not in Rating.Verdict.values:
        raise RatingError(f"Unknown verdict {verdict!r}: choose one of {', '.join(Rating.Verdict.values)}.")
    comment = check_text(comment, "comment").strip()[:MAX_COMMENT]
    now = timezone.now()
    with transaction.atomic():
        lease = _lease_for_update(rater, token)
        if lease is None:
            raise _no_lease_error(rater, token)
        comparison = lease.comparison
        if lease.completed_at is not None:
            existing = Rating.objects.filter(comparison=comparison, rater=rater).first()
            if existing is None:
                raise RatingError("You skipped or flagged this comparison: take the next one.")
            return existing
        _check_open(lease, now)
        experiment = comparison.experiment
        cleaned = _clean_criteria(experiment.criteria or [], criteria or {})
        # Every rater answers each qualification check: k does not apply to them.
        counted = Comparison.objects.filter(
            Q(ratings_count__lt=experiment.raters_per_comparison) | Q(qualification=True), pk=comparison.pk
        ).update(ratings_count=F("ratings_count") + 1)
        if not counted:
            raise RatingError("This comparison has all the votes it needs: take the next one.")
        session = RatingSession.objects.select_for_update().filter(rater=rater, ended_at__isnull=True).first()
        elapsed = max(0.0, (now - lease.started_at).total_seconds())
        away = min(max(0.0, away_seconds), elapsed) if math.isfinite(away_seconds) else 0.0
        seconds = elapsed - away
        gold_correct = None
        if comparison.gold_side:
            gold_correct = verdict == ("right" if comparison.gold_side == "left" else "left")
        rating = Rating.objects.create(
            comparison=comparison,
            rater=rater,
            verdict=verdict,
            comment=comment,
            criteria=cleaned,
            seconds=seconds,
            away_seconds=away,
            too_fast=seconds < experiment.min_seconds_per_vote,
            gold_correct=gold_correct,
            session=session,
        )
        lease.completed_at = now
        lease.save(update_fields=["completed_at"])
        if (
            session is not None
            and session.paused_at is None
            and Rating.objects.filter(session=session).count() >= session.target
        ):
            session.ended_at = now
            session.save(update_fields=["ended_at"])
        transaction.on_commit(lambda: events.votes_cast(experiment.pk))
    return rating


def undo_last_vote(*, rater: AbstractBaseUser) -> Rating:
    """Take back the last vote of the rater's latest session and hand its comparison back to them.

    A vote stands once another rater has voted on the same comparison after it: they judged it with
    this vote in the count. The comparison the rater held meanwhile goes back to the pool, and a
    session that this vote ended at its target goes on.
    """
    now = timezone.now()
    with transaction.atomic():
        list(Lease.objects.select_for_update().filter(rater=rater, completed_at__isnull=True))
        session = RatingSession.objects.filter(rater=rater).order_by("-started_at").first()
        rating = (
            Rating.objects.filter(session=session)
            .select_related("comparison")
            .order_by("-created_at", "-pk")
            .first()
            if session is not None
            else None
        )
        if rating is None:
            raise RatingError("There is no vote of this session to undo.")
        comparison = rating.comparison
        lease = Lease.objects.select_for_update().get(comparison=comparison, rater=rater)
        if Rating.objects.filter(comparison=comparison, created_at__gt=rating.created_at).exists():
            raise RatingError("Another rater has voted on that comparison since: your vote stands.")
        Comparison.objects.filter(pk=comparison.pk).update(ratings_count=F("ratings_count") - 1)
        rating.delete()
        _give_back_leases(rater)
        lease.started_at, lease.completed_at = now, None
        lease.expires_at = now + timedelta(seconds=settings.LEASE_SECONDS)
        lease.save(update_fields=["started_at", "completed_at", "expires_at"])
        if session.ended_at is not None:
            session.ended_at = None
            session.save(update_fields=["ended_at"])
        transaction.on_commit(lambda: events.votes_cast(comparison.experiment_id))
    return rating


@dataclass(frozen=True)
class PastVote:
    """A vote as its rater sees it in the session's history: never the arms, only the sides."""

    prompt: str
    verdict: str
    seconds: float
    too_fast: bool


def recent_votes(*, session: RatingSession, limit: int = 5) -> list[PastVote]:
    """The session's last votes, newest first."""
    ratings = Rating.objects.filter(session=session).select_related("comparison__prompt")
    return [
        PastVote(
            prompt=rating.comparison.prompt.text,
            verdict=rating.get_verdict_display(),
            seconds=rating.seconds,
            too_fast=rating.too_fast,
        )
        for rating in ratings.order_by("-created_at", "-pk")[:limit]
    ]


def skip_comparison(*, rater: AbstractBaseUser, token: str) -> None:
    """Give the comparison back for others; this rater will not see it again."""
    with transaction.atomic():
        lease = _lease_for_update(rater, token)
        if lease is None:
            raise _no_lease_error(rater, token)
        if lease.completed_at is None:
            lease.completed_at = timezone.now()
            lease.skipped = True
            lease.save(update_fields=["completed_at", "skipped"])


def flag_comparison(*, rater: AbstractBaseUser, token: str, reason: str) -> None:
    """Report a broken or unratable comparison; flagged comparisons can be excluded from results."""
    reason = check_text(reason, "reason").strip()
    if not reason:
        raise RatingError("Say in a few words what is wrong with this comparison, then flag it.")
    with transaction.atomic():
        lease = _lease_for_update(rater, token)
        if lease is None:
            raise _no_lease_error(rater, token)
        if lease.completed_at is None:
            lease.completed_at = timezone.now()
            lease.flag_reason = reason[:2000]
            lease.save(update_fields=["completed_at", "flag_reason"])
            Comparison.objects.filter(pk=lease.comparison_id).update(flag_count=F("flag_count") + 1)


def active_session(*, rater: AbstractBaseUser) -> RatingSession | None:
    """The rater's session that has not ended."""
    return RatingSession.objects.filter(rater=rater, ended_at__isnull=True).order_by("-started_at").first()


def start_session(*, rater: AbstractBaseUser, target: int = DEFAULT_SESSION_TARGET) -> RatingSession:
    if not 1 <= target <= 1000:
        raise RatingError("A session's target is between 1 and 1000 comparisons.")
    with transaction.atomic():
        now = timezone.now()
        RatingSession.objects.filter(rater=rater, ended_at__isnull=True).update(ended_at=now)
        # The rater's votes so far are counted once here; the session then counts only its own rows.
        votes_before = Rating.objects.filter(rater=rater).count()
        return RatingSession.objects.create(
            rater=rater, target=target, started_at=now, votes_before=votes_before
        )


def _give_back_leases(rater: AbstractBaseUser) -> None:
    """The comparison on screen goes back to the pool rather than waiting out its lease (first, as the
    lease is a request's first lock)."""
    Lease.objects.filter(rater=rater, completed_at__isnull=True).delete()


def pause_session(*, rater: AbstractBaseUser) -> RatingSession:
    with transaction.atomic():
        _give_back_leases(rater)
        session = active_session(rater=rater)
        if session is None:
            raise RatingError("There is no session to pause.")
        if session.paused_at is None:
            session.paused_at = timezone.now()
            session.save(update_fields=["paused_at"])
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
    with transaction.atomic():
        _give_back_leases(rater)
        session = active_session(rater=rater)
        if session is not None:
            now = timezone.now()
            if session.paused_at is not None:
                session.paused_seconds += (now - session.paused_at).total_seconds()
                session.paused_at = None
            session.ended_at = now
            session.save(update_fields=["paused_seconds", "paused_at", "ended_at"])
    return session


@dataclass(frozen=True)
class SessionSummary:
    done: int
    target: int
    seconds: float
    gold_seen: int
    gold_correct: int
    all_votes: int  # the rater's votes: those before the session began (votes_before) and the session's

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None


def session_summary(session: RatingSession) -> SessionSummary:
    """The session's progress, counted over its own votes."""
    counts = Rating.objects.filter(session=session).aggregate(
        done=Count("pk"),
        gold_seen=Count("pk", filter=Q(gold_correct__isnull=False)),
        gold_correct=Count("pk", filter=Q(gold_correct=True)),
    )
    end = session.ended_at or session.paused_at or timezone.now()
    return SessionSummary(
        done=counts["done"],
        target=session.target,
        seconds=max(0.0, (end - session.started_at).total_seconds() - session.paused_seconds),
        gold_seen=counts["gold_seen"],
        gold_correct=counts["gold_correct"],
        all_votes=session.votes_before + counts["done"],
    )
