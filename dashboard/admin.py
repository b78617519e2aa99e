"""Admin for ratings and the leases that hand comparisons to raters."""

from django.contrib import admin

from dashboard.models import Lease, Rating


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "rater", "verdict", "seconds", "created_at"]
    list_filter = ["verdict", "comparison__experiment"]
    readonly_fields = ["comparison", "rater", "verdict", "comment", "seconds", "created_at"]


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "rater", "started_at", "expires_at", "completed_at"]
    readonly_fields = ["comparison", "rater", "started_at", "expires_at", "completed_at"]
