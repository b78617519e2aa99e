"""Reads that feed the results pages, the exports and the statistics."""

import hashlib
import hmac
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet

from dashboard.models import Rating
from evaluator.models import Comparison, Experiment, Generation, Variant


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


def ratings_for_export(experiment: Experiment) -> QuerySet[Rating]:
    return (
        Rating.objects.filter(comparison__experiment=experiment)
        .select_related(
            "comparison__prompt__category",
            "comparison__left__variant",
            "comparison__right__variant",
        )
        .order_by("pk")
    )


@dataclass
class ArmTally:
    variant: Variant
    wins: int = 0
    losses: int = 0
    ties: int = 0
    both_bad: int = 0

    @property
    def votes(self) -> int:
        return self.wins + self.losses + self.ties + self.both_bad

    @property
    def win_rate(self) -> float | None:
        """Share of votes won, a tie or "both bad" counting half."""
        if not self.votes:
            return None
        return (self.wins + 0.5 * (self.ties + self.both_bad)) / self.votes


def win_rates(experiment: Experiment) -> dict[str, list[ArmTally]]:
    """Per category name (and "All"), each arm's wins, losses and ties, best first."""
    variants = {v.pk: v for v in experiment.variants.all()}
    tallies: dict[str, dict[int, ArmTally]] = defaultdict(dict)
    rows = Rating.objects.filter(comparison__experiment=experiment, comparison__gold_side="").values_list(
        "verdict",
        "comparison__left__variant_id",
        "comparison__right__variant_id",
        "comparison__prompt__category__name",
    )
    for verdict, left, right, category in rows:
        for name in (category, "All"):
            table = tallies[name]
            a = table.setdefault(left, ArmTally(variants[left]))
            b = table.setdefault(right, ArmTally(variants[right]))
            if verdict == Rating.Verdict.LEFT:
                a.wins, b.losses = a.wins + 1, b.losses + 1
            elif verdict == Rating.Verdict.RIGHT:
                b.wins, a.losses = b.wins + 1, a.losses + 1
            elif verdict == Rating.Verdict.TIE:
                a.ties, b.ties = a.ties + 1, b.ties + 1
            else:
                a.both_bad, b.both_bad = a.both_bad + 1, b.both_bad + 1
    return {
        name: sorted(table.values(), key=lambda t: -(t.win_rate or 0))
        for name, table in sorted(tallies.items(), key=lambda item: (item[0] == "All", item[0]))
    }


@dataclass(frozen=True)
class Progress:
    generations_done: int
    generations_failed: int
    generations_total: int
    comparisons_ready: int
    comparisons_total: int
    votes: int
    votes_needed: int


def experiment_progress(experiment: Experiment) -> Progress:
    gens = Generation.objects.filter(experiment=experiment).aggregate(
        total=Count("pk"),
        done=Count("pk", filter=Q(status=Generation.Status.DONE)),
        failed=Count("pk", filter=Q(status=Generation.Status.FAILED)),
    )
    comps = Comparison.objects.filter(experiment=experiment).aggregate(
        total=Count("pk", filter=Q(is_identical=False)),
        ready=Count("pk", filter=Q(ready_at__isnull=False, is_identical=False)),
    )
    votes = Rating.objects.filter(comparison__experiment=experiment).count()
    return Progress(
        generations_done=gens["done"],
        generations_failed=gens["failed"],
        generations_total=gens["total"],
        comparisons_ready=comps["ready"],
        comparisons_total=comps["total"],
        votes=votes,
        votes_needed=comps["total"] * experiment.raters_per_comparison,
    )


def rater_progress(user: AbstractBaseUser) -> dict[str, int]:
    """The rater's own votes and the whole team's, for the progress line on the rating page."""
    return {"mine": Rating.objects.filter(rater=user).count(), "team": Rating.objects.count()}


def iter_votes(experiment: Experiment, chunk_size: int = 2000) -> Iterator[Rating]:
    yield from ratings_for_export(experiment).iterator(chunk_size=chunk_size)
