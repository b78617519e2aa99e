"""People and their judgements: leases that hand a comparison to a rater, and the ratings they give."""

from django.conf import settings
from django.db import models

from evaluator.models import Comparison, Experiment


class RaterProfile(models.Model):
    """What a rater may rate: when experiments are chosen, only those."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rater_profile"
    )
    experiments = models.ManyToManyField(Experiment, blank=True, related_name="+")

    def __str__(self) -> str:
        return f"rater profile of {self.user}"


class RatingSession(models.Model):
    """A sitting of a rater: a target number of comparisons, pausable, ending with a summary."""

    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rating_sessions"
    )
    target = models.PositiveIntegerField(default=20)
    started_at = models.DateTimeField()
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_seconds = models.FloatField(default=0.0)
    ended_at = models.DateTimeField(null=True, blank=True)
    votes_before = models.PositiveIntegerField(
        default=0,
        help_text="The rater's votes before this session began.",
    )

    class Meta:
        indexes = [models.Index(fields=["rater", "ended_at"])]

    def __str__(self) -> str:
        return f"session {self.pk} of {self.rater}"


class Lease(models.Model):
    """A comparison handed to one rater until expires_at; the vote closes it."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="leases")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases")
    started_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True, help_text="Voted, skipped or flagged.")
    skipped = models.BooleanField(default=False)
    flag_reason = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "rater"], name="lease_once_per_rater"),
            # A rater holds one comparison at a time, however many tabs ask at once.
            models.UniqueConstraint(
                fields=["rater"],
                condition=models.Q(completed_at__isnull=True),
                name="one_open_lease_per_rater",
            ),
        ]
        indexes = [
            models.Index(fields=["rater", "completed_at"]),
            models.Index(fields=["comparison", "expires_at"]),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} of comparison {self.comparison_id} to {self.rater}"


class Rating(models.Model):
    """One rater's verdict on one comparison, recorded by side (left/right) as shown."""

    class Verdict(models.TextChoices):
        LEFT = "left", "A better"
        RIGHT = "right", "B better"
        TIE = "tie", "tie"
        BOTH_BAD = "both_bad", "both bad"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="ratings")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ratings")
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    criteria = models.JSONField(default=dict, blank=True, help_text="criterion → left, right or tie")
    seconds = models.FloatField(
        help_text="Seconds spent on the comparison with its page in view: hand-out to vote, less time away."
    )
    away_seconds = models.FloatField(default=0.0, help_text="Seconds the page was hidden (another tab).")
    too_fast = models.BooleanField(
        default=False, help_text="Faster than the experiment's minimum: kept, flagged."
    )
    gold_correct = models.BooleanField(null=True, blank=True, help_text="On a gold comparison: was it right?")
    session = models.ForeignKey(
        RatingSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="ratings"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        permissions = [("view_results", "Can view results and export votes")]
        constraints = [models.UniqueConstraint(fields=["comparison", "rater"], name="rating_once_per_rater")]

    def __str__(self) -> str:
        return f"{self.rater} on comparison {self.comparison_id}: {self.verdict}"
