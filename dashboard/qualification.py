"""The qualification round: gold checks a rater answers before any real comparison of an experiment.

An experiment with `qualification_items` > 0 has that many qualification comparisons (an output against a
degraded copy of itself, made at scheduling). Every rater answers each of them once, however many raters
have already (they are not limited by raters_per_comparison). Until a rater has answered all of them they
get only those, of that experiment; afterwards, with at least `qualification_accuracy` of them right they
get its real comparisons, and otherwise none. A skipped or flagged check counts as answered and not right,
so skipping the hard ones does not help. The votes are gold votes (gold_side is set): never counted as
preferences.
"""

import math
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, OuterRef, QuerySet

from dashboard.models import Lease, Rating
from evaluator.models import Comparison, Experiment


@dataclass(frozen=True)
class Standing:
    """Where a rater stands in one experiment's qualification round."""

    experiment_id: int
    total: int  # qualification checks to answer (an identical pair, never shown, does not count)
    answered: int
    correct: int
    accuracy: float  # the share needed

    @property
    def needed(self) -> int:
        return math.ceil(self.accuracy * self.total - 1e-9)

    @property
    def finished(self) -> bool:
        return self.answered >= self.total

    @property
    def passed(self) -> bool:
        return self.finished and self.correct >= self.needed

    @property
    def failed(self) -> bool:
        return self.finished and not self.passed

    @property
    def message(self) -> str:
        """What the rater is told, without naming the experiment (its name may describe the arms)."""
        if self.passed:
            return f"You passed the qualification checks ({self.correct} of {self.total} right)."
        if self.failed:
            return (
                f"You did not pass the qualification checks of one study ({self.correct} of {self.total} "
                f"right, {self.needed} needed): its comparisons go to other raters."
            )
        return f"Qualification: {self.answered} of {self.total} checks answered."


@dataclass(frozen=True)
class Progress:
    """The qualification line of the rating page: "Qualification: N of M" for the check shown now."""

    position: int
    total: int

    def __str__(self) -> str:
        return f"Qualification: {self.position} of {self.total}"


def standings(*, rater: AbstractBaseUser, experiment_ids: list[int] | None = None) -> dict[int, Standing]:
    """The rater's standing in every scheduled experiment with a qualification round (or the given ones)."""
    experiments = Experiment.objects.filter(qualification_items__gt=0)
    if experiment_ids is None:
        experiments = experiments.filter(status=Experiment.Status.SCHEDULED)
    else:
        experiments = experiments.filter(pk__in=experiment_ids)
    accuracy = dict(experiments.values_list("pk", "qualification_accuracy"))
    if not accuracy:
        return {}
    totals = dict(
        Comparison.objects.filter(experiment_id__in=list(accuracy), qualification=True, is_identical=False)
        .order_by()
        .values("experiment")
        .annotate(n=Count("pk"))
        .values_list("experiment", "n")
    )
    answered = dict(
        Lease.objects.filter(
            rater=rater,
            completed_at__isnull=False,
            comparison__qualification=True,
            comparison__is_identical=False,
            comparison__experiment_id__in=list(accuracy),
        )
        .order_by()
        .values("comparison__experiment")
        .annotate(n=Count("pk"))
        .values_list("comparison__experiment", "n")
    )
    correct = dict(
        Rating.objects.filter(
            rater=rater,
            gold_correct=True,
            comparison__qualification=True,
            comparison__is_identical=False,
            comparison__experiment_id__in=list(accuracy),
        )
        .order_by()
        .values("comparison__experiment")
        .annotate(n=Count("pk"))
        .values_list("comparison__experiment", "n")
    )
    return {
        pk: Standing(
            experiment_id=pk,
            total=totals.get(pk, 0),
            answered=answered.get(pk, 0),
            correct=correct.get(pk, 0),
            accuracy=share,
        )
        for pk, share in accuracy.items()
    }


def checks_for(*, rater: AbstractBaseUser, experiment: Experiment) -> QuerySet[Comparison] | None:
    """What the rater gets of the experiment while its round lasts: the checks they have not answered
    (none once they failed), in hand-out order; None when there is no round for them (none, or passed).
    """
    if not experiment.qualification_items:
        return None
    standing = standings(rater=rater, experiment_ids=[experiment.pk]).get(experiment.pk)
    if standing is None or standing.passed:
        return None
    if standing.failed:
        return Comparison.objects.none()
    return (
        Comparison.objects.ready()
        .filter(experiment=experiment, qualification=True)
        .exclude(Exists(Lease.objects.filter(comparison=OuterRef("pk"), rater=rater)))
        .order_by("order_key")
    )


def progress(*, rater: AbstractBaseUser, comparison: Comparison) -> Progress | None:
    """For a qualification check handed to the rater: which of the round's checks it is; else None."""
    if not comparison.qualification:
        return None
    standing = standings(rater=rater, experiment_ids=[comparison.experiment_id]).get(comparison.experiment_id)
    if standing is None:
        return None
    return Progress(position=min(standing.answered + 1, standing.total), total=standing.total)


def failed_messages(*, rater: AbstractBaseUser) -> list[str]:
    """One line per scheduled experiment whose round the rater failed, for an empty rating page."""
    return [s.message for s in standings(rater=rater).values() if s.failed]
