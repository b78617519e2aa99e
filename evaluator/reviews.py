"""A researcher's decision on a flagged comparison: leave it out of the results, keep it, or fix its prompt.

The decision is stored on the comparison; the results read it (a comparison reviewed "keep" counts
again even though a rater flagged it, "exclude" and "fix_prompt" stay out while flagged votes are left
out), and live results pages are told on commit.
"""

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from evaluator import events
from evaluator.models import Comparison

DECISIONS = dict(Comparison._meta.get_field("flag_decision").choices)
# Decisions that leave the comparison's votes out of the results.
EXCLUDING = ("exclude", "fix_prompt")
NOTE_LIMIT = 2000


class ReviewError(Exception):
    """A decision that cannot be recorded, with a message for the researcher."""


def review_flagged_comparison(
    *, comparison_id: int, decision: str, reviewer: AbstractBaseUser, note: str = ""
) -> Comparison:
    """Record ``decision`` ("exclude", "keep" or "fix_prompt") on a flagged comparison; a new decision
    replaces an earlier one."""
    if decision not in DECISIONS:
        raise ReviewError(f"Choose a decision: {', '.join(DECISIONS)}.")
    note = note.replace("\x00", "").strip()
    if len(note) > NOTE_LIMIT:
        raise ReviewError(f"Keep the note under {NOTE_LIMIT} characters.")
    with transaction.atomic():
        comparison = Comparison.objects.select_for_update().filter(pk=comparison_id).first()
        if comparison is None:
            raise ReviewError("That comparison no longer exists.")
        if comparison.flag_count == 0:
            raise ReviewError("Only a comparison that a rater flagged is reviewed here.")
        comparison.flag_decision = decision
        comparison.flag_note = note
        comparison.flag_reviewed_by = reviewer
        comparison.flag_reviewed_at = timezone.now()
        comparison.save(update_fields=["flag_decision", "flag_note", "flag_reviewed_by", "flag_reviewed_at"])
        experiment_id = comparison.experiment_id
        transaction.on_commit(lambda: events.experiment_changed(experiment_id, flags=True))
    return comparison
