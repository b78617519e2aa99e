"""People and their judgements: leases that hand a comparison to a rater, and the ratings they give."""

from django.conf import settings
from django.db import models

from evaluator.models import Comparison


class Lease(models.Model):
    """A comparison handed to one rater until expires_at; the vote closes it."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="leases")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="leases")
    started_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["comparison", "rater"], name="lease_once_per_rater")]
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
    seconds = models.FloatField(help_text="Seconds from hand-out to vote, measured on the server.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        permissions = [("view_results", "Can view results and export votes")]
        constraints = [models.UniqueConstraint(fields=["comparison", "rater"], name="rating_once_per_rater")]

    def __str__(self) -> str:
        return f"{self.rater} on comparison {self.comparison_id}: {self.verdict}"
