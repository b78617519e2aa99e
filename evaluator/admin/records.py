"""Read-only admin of what the jobs produce: outputs, pairs, jobs and worker heartbeats."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from evaluator.models import (
    Comparison,
    Generation,
    Job,
    WorkerStatus,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Generation)
class GenerationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "experiment",
        "variant",
        "prompt_id",
        "seed",
        "status",
        "new_tokens",
        "tokens_per_s",
        "attempts",
        "error",
    ]
    list_filter = ["status", "experiment", "variant"]
    list_select_related = ["experiment", "variant"]


@admin.register(Comparison)
class ComparisonAdmin(ReadOnlyAdmin):
    list_display = ["id", "experiment", "prompt_id", "seed", "ready_at", "is_identical", "ratings_count"]
    list_filter = ["experiment", "is_identical"]
    list_select_related = ["experiment"]


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["task_id", "experiment", "variant", "status", "worker", "attempts", "stored", "queued_at"]
    list_filter = ["status", "experiment"]
    list_select_related = ["experiment", "variant"]


@admin.register(WorkerStatus)
class WorkerStatusAdmin(ReadOnlyAdmin):
    list_display = ["hostname", "online", "device", "memory", "loaded_checkpoint", "last_seen"]

    @admin.display(boolean=True)
    def online(self, obj: WorkerStatus) -> bool:
        from evaluator.heartbeat import OFFLINE_AFTER

        return obj.last_seen >= timezone.now() - OFFLINE_AFTER
