"""Reads that feed the dashboard's pages and exports."""

import hashlib
import hmac

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Coalesce

from dashboard.models import Rating
from evaluator.models import Comparison, Experiment


def rater_pseudonym(user_id: int) -> str:
    """A stable name for a rater in exports that does not reveal the account."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"rater:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"rater-{digest[:10]}"


def can_view_results(user: AbstractBaseUser) -> bool:
    return user.is_authenticated and (user.is_staff or user.has_perm("dashboard.view_results"))


def visible_experiments() -> QuerySet[Experiment]:
    return Experiment.objects.exclude(status=Experiment.Status.DRAFT).annotate(
        votes=Count("comparisons__ratings", distinct=True)
    )


TEAM_PROGRESS_SECONDS = 5


def rater_progress(user: AbstractBaseUser, experiment: Experiment | None) -> dict[str, int | None]:
    """The rater's own votes, and the team's votes on the experiment at hand out of the votes it needs.

    The team's figure sums a counter over the experiment's comparisons. Every rater's page shows it after
    every vote, so it is cached for a few seconds rather than summed again for each of them.
    """
    progress: dict[str, int | None] = {"mine": Rating.objects.filter(rater=user).count(), "team": None}
    if experiment is not None:
        key = f"team-progress:{experiment.pk}"
        team = cache.get(key)
        if team is None:
            team = (
                Comparison.objects.ready()
                .filter(experiment=experiment)
                .aggregate(done=Coalesce(Sum("ratings_count"), 0), comparisons=Count("pk"))
            )
            cache.set(key, team, TEAM_PROGRESS_SECONDS)
        progress["team"] = team["done"]
        progress["team_needed"] = team["comparisons"] * experiment.raters_per_comparison
    return progress
