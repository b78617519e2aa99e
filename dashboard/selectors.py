"""Reads that feed the dashboard's pages and exports."""

import hashlib
import hmac

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Coalesce

from evaluator.models import Comparison, Experiment


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
