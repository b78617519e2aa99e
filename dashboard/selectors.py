"""Reads that feed the dashboard's pages and exports."""

import hashlib
import hmac

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, QuerySet

from dashboard.models import Rating
from evaluator.models import Experiment


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


def rater_progress(user: AbstractBaseUser) -> dict[str, int]:
    """The rater's own votes and the whole team's, for the progress line on the rating page."""
    return {"mine": Rating.objects.filter(rater=user).count(), "team": Rating.objects.count()}
