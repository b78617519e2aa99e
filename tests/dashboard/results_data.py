"""Experiments with real outputs of the small model, and votes cast on them, for the results tests.

Outputs always come from the engine (`run_generations`); only the human side, the votes, is made up
here, through `submit_rating` where a test is about one vote and in bulk where it needs thousands.
"""

import random

from django.contrib.auth import get_user_model

from dashboard.models import Rating
from dashboard.services import next_comparison, submit_rating
from evaluator.models import Comparison, Experiment
from tests.factories import make_checkpoint, run_generations, scheduled_experiment

# Six prompts per category: a prompt bootstrap over fewer leaves a category without data in too many
# rounds for its interval to separate even a landslide.
PROMPTS = [
    ("routine", "Dear team,\n"),
    ("routine", "Hello all,\nPlease"),
    ("routine", "Subject: meeting\n"),
    ("routine", "Hi Sam,\nThanks for"),
    ("routine", "Reminder:"),
    ("routine", "Dear customer,\n"),
    ("philosophy", "Premise one:"),
    ("philosophy", "Objection:"),
    ("philosophy", "Consider the claim that"),
    ("philosophy", "Is a heap of sand"),
    ("philosophy", "Suppose that knowledge"),
    ("philosophy", "The argument runs"),
]


def experiment_with_outputs(model_path, *, depths=(1, 4), name: str = "results", **fields) -> Experiment:
    fields.setdefault("min_seconds_per_vote", 0)
    experiment = scheduled_experiment(
        make_checkpoint(model_path, name=f"tiny-{name}"), depths=depths, prompts=PROMPTS, name=name, **fields
    )
    run_generations(experiment)
    return experiment


def make_raters(count: int, prefix: str = "rater") -> list:
    User = get_user_model()
    return [User.objects.create_user(f"{prefix}-{i}", password=None) for i in range(count)]


def preferred_side(comparison: Comparison, arm_name: str) -> str:
    """The verdict that picks ``arm_name``: left or right, depending on where it was shown."""
    if comparison.left.variant.name == arm_name:
        return "left"
    if comparison.right.variant.name == arm_name:
        return "right"
    return "tie"


def gold_answer(comparison: Comparison, *, right: bool) -> str:
    """The verdict a careful rater gives on a gold check (the real output wins), or the wrong one."""
    good = "right" if comparison.gold_side == "left" else "left"
    return good if right else comparison.gold_side


def rate_everything(rater, *, prefer: str, gold_right: bool = True) -> list[Rating]:
    """The rater takes every comparison offered and picks the arm ``prefer`` (a tie when it is absent)."""
    ratings = []
    while (assignment := next_comparison(rater=rater)) is not None:
        comparison = assignment.comparison
        if comparison.is_gold:
            verdict = gold_answer(comparison, right=gold_right)
        else:
            verdict = preferred_side(comparison, prefer)
        ratings.append(submit_rating(rater=rater, token=comparison.token, verdict=verdict))
    return ratings


def bulk_votes(
    experiment: Experiment, raters: list, *, prefer: str, share: float = 1.0, otherwise: str = "tie", **fields
) -> int:
    """Every rater votes on every preference comparison: ``prefer`` wins a ``share`` of the votes.

    The other votes go to the arm named ``otherwise``, or are ties; who wins which vote is drawn with a
    fixed seed. Stored in one insert, as a large team would have voted over days. Returns the votes.
    """
    rng = random.Random(0)
    comparisons = list(
        Comparison.objects.ready()
        .filter(experiment=experiment, gold_side="")
        .select_related("left__variant", "right__variant")
    )
    ratings = [
        Rating(
            comparison=comparison,
            rater=rater,
            verdict=preferred_side(comparison, prefer if rng.random() < share else otherwise),
            seconds=12.0,
            **fields,
        )
        for rater in raters
        for comparison in comparisons
    ]
    Rating.objects.bulk_create(ratings, batch_size=2000)
    return len(ratings)
