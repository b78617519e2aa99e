"""Reads that feed the dashboard's pages and exports."""

import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from dashboard.models import Rating
from evaluator.models import Comparison, Experiment, Generation

if TYPE_CHECKING:
    from dashboard import analysis


def rater_pseudonym(user_id: int) -> str:
    """A stable name for a rater in exports that does not reveal the account."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"rater:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"rater-{digest[:10]}"


def can_view_results(user: AbstractBaseUser) -> bool:
    return user.has_perm("dashboard.view_results")


def visible_experiments() -> QuerySet[Experiment]:
    return Experiment.objects.exclude(status=Experiment.Status.DRAFT).annotate(
        votes=Count("comparisons__ratings", distinct=True)
    )


TEAM_PROGRESS_SECONDS = 5


def team_progress(experiment_id: int, raters_per_comparison: int) -> dict[str, int]:
    """The team's votes on an experiment out of the votes it needs.

    It sums a counter over the experiment's comparisons. Every rater's page shows it after every vote, so
    it is cached for a few seconds rather than summed again for each of them.
    """
    key = f"team-progress:{experiment_id}"
    team = cache.get(key)
    if team is None:
        team = (
            Comparison.objects.ready()
            .filter(experiment_id=experiment_id)
            .aggregate(done=Coalesce(Sum("ratings_count"), 0), comparisons=Count("pk"))
        )
        cache.set(key, team, TEAM_PROGRESS_SECONDS)
    return {"done": team["done"], "needed": team["comparisons"] * raters_per_comparison}


@dataclass(frozen=True)
class StoredResults:
    """An experiment's results as computed at `computed_at` from the data that `fingerprint` names."""

    results: "analysis.ExperimentResults"
    computed_at: datetime
    fingerprint: tuple
    compute_seconds: float  # CPU time the computation took (its thread's)

    def refresh_after(self) -> float:
        """Seconds before the next computation: the setting, or long enough that computing results
        takes at most a fifth of one core however busy the experiment is; 0 computes on every change."""
        if not settings.RESULTS_REFRESH_SECONDS:
            return 0.0
        return max(settings.RESULTS_REFRESH_SECONDS, RESULTS_CPU_SHARE_INVERSE * self.compute_seconds)


@dataclass(frozen=True)
class ResultsForPage:
    stored: StoredResults
    current: bool  # no vote, flag or output arrived since it was computed
    refresh_in: int  # when not current: seconds until it will be computed again

    @property
    def results(self) -> "analysis.ExperimentResults":
        return self.stored.results


def results_fingerprint(experiment: Experiment) -> tuple:
    """What an experiment's results are computed from, read cheaply: its votes, flags and their reviews,
    and its outputs."""
    votes = Rating.objects.filter(comparison__experiment=experiment).aggregate(n=Count("pk"), last=Max("pk"))
    comparisons = Comparison.objects.filter(experiment=experiment).aggregate(
        ready=Count("pk", filter=Q(ready_at__isnull=False)),
        flags=Coalesce(Sum("flag_count"), 0),
        reviewed=Max("flag_reviewed_at"),
    )
    outputs = Generation.objects.filter(experiment=experiment).aggregate(
        done=Count("pk", filter=Q(status=Generation.Status.DONE)), last=Max("finished_at")
    )
    return (*votes.values(), *comparisons.values(), *outputs.values())


def results_for_page(experiment: Experiment, *, exclusions: "analysis.Exclusions") -> ResultsForPage:
    """The experiment's results for the results page, computed at most once per RESULTS_REFRESH_SECONDS
    (longer when one computation takes long) however many pages are open, and not at all while nothing
    changes.

    The fit (Bradley-Terry and its bootstrap) costs far more than a vote, and every vote makes each open
    page re-fetch. So the last result is kept in the cache and served to every page until the data it
    was computed from changes and it is older than the refresh interval. While one request computes,
    the others serve the last result.
    """
    from dashboard import analysis

    created, rounds = experiment.created_at.timestamp(), analysis.bootstrap_rounds()
    key = f"results:{experiment.pk}:{created}:{rounds}:{urlencode(exclusions.query_items())}"
    stored: StoredResults | None = cache.get(key)
    fingerprint = results_fingerprint(experiment)
    if stored is not None and stored.fingerprint == fingerprint:
        return ResultsForPage(stored=stored, current=True, refresh_in=0)
    now = timezone.now()
    if stored is not None:
        age = (now - stored.computed_at).total_seconds()
        wait = stored.refresh_after() - age
        if wait > 0 or not cache.add(f"{key}:computing", True, timeout=RESULTS_COMPUTE_TIMEOUT):
            return ResultsForPage(stored=stored, current=False, refresh_in=max(1, math.ceil(wait)))
    try:
        started = time.thread_time()
        results = analysis.experiment_results(experiment, exclusions=exclusions)
        stored = StoredResults(
            results=results,
            computed_at=now,
            fingerprint=fingerprint,
            compute_seconds=time.thread_time() - started,
        )
        cache.set(key, stored, timeout=RESULTS_KEEP_SECONDS)
    finally:
        cache.delete(f"{key}:computing")
    return ResultsForPage(stored=stored, current=True, refresh_in=0)


RESULTS_COMPUTE_TIMEOUT = 120  # a computation that died without letting go is given up after this
RESULTS_KEEP_SECONDS = 24 * 3600
RESULTS_CPU_SHARE_INVERSE = 5
