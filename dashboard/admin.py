"""Admin for raters' limits, their sessions, ratings and the leases that hand comparisons out."""

from django.contrib import admin

from dashboard.models import Lease, RaterProfile, Rating, RatingSession


@admin.register(RaterProfile)
class RaterProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "limited_to"]
    filter_horizontal = ["experiments"]
    search_fields = ["user__username"]

    @admin.display(description="experiments")
    def limited_to(self, obj: RaterProfile) -> str:
        names = [e.name for e in obj.experiments.all()]
        return ", ".join(names) if names else "all"


@admin.register(RatingSession)
class RatingSessionAdmin(admin.ModelAdmin):
    list_display = ["id", "rater", "target", "started_at", "paused_at", "ended_at"]
    list_filter = ["rater"]
    readonly_fields = ["rater", "target", "started_at", "paused_at", "paused_seconds", "ended_at"]


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "rater", "verdict", "seconds", "created_at"]
    list_filter = ["verdict", "comparison__experiment"]
    readonly_fields = ["comparison", "rater", "verdict", "comment", "seconds", "created_at"]


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "rater", "started_at", "expires_at", "completed_at"]
    readonly_fields = ["comparison", "rater", "started_at", "expires_at", "completed_at"]
