"""Read-only admin of what the jobs produce: outputs, pairs, jobs and worker heartbeats."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from evaluator.admin.formatting import format_rate, format_seconds, truncated
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
        "speed",
        "error_short",
    ]
    list_filter = ["status", "experiment", "variant"]
    list_select_related = ["experiment", "variant"]
    readonly_fields = ["speed", "duration", "active_experts"]
    fieldsets = [
        (None, {"fields": ["experiment", "variant", "prompt", "seed", "status", "text", "error"]}),
        (
            "Cost",
            {"fields": ["prompt_tokens", "new_tokens", "duration", "speed", "depth_k", "active_experts"]},
        ),
        ("Job", {"fields": ["attempts", "claimed_by", "claimed_at", "finished_at"]}),
        ("Routing", {"fields": ["routing"], "classes": ["collapse"]}),
    ]

    @admin.display(description="tokens/s", ordering="tokens_per_s")
    def speed(self, obj: Generation) -> str:
        return format_rate(obj.tokens_per_s)

    @admin.display(description="time")
    def duration(self, obj: Generation) -> str:
        return format_seconds(obj.seconds)

    @admin.display(description="error")
    def error_short(self, obj: Generation) -> str:
        return truncated(obj.error, 60)

    @admin.display(description="active experts per token")
    def active_experts(self, obj: Generation) -> str:
        if obj.mean_active_experts is None:
            return "–"
        computed = f" ({obj.compute_experts:.2f} computed)" if obj.compute_experts is not None else ""
        return f"{obj.mean_active_experts:.2f}{computed}"


@admin.register(Comparison)
class ComparisonAdmin(ReadOnlyAdmin):
    list_display = ["id", "experiment", "prompt_id", "seed", "kind", "ready_at", "ratings_count"]
    list_filter = ["experiment", "qualification", "is_identical"]
    list_select_related = ["experiment"]

    @admin.display(description="kind")
    def kind(self, obj: Comparison) -> str:
        if obj.qualification:
            return "qualification"
        if obj.gold_side:
            return "gold check"
        return "identical outputs" if obj.is_identical else "pair"


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["short_id", "experiment", "variant", "status", "worker", "stored", "queued_at"]
    list_filter = ["status", "experiment"]
    list_select_related = ["experiment", "variant"]

    @admin.display(description="task", ordering="task_id")
    def short_id(self, obj: Job) -> str:
        return truncated(obj.task_id, 10)


@admin.register(WorkerStatus)
class WorkerStatusAdmin(ReadOnlyAdmin):
    list_display = ["hostname", "online", "device", "memory", "loaded_checkpoint", "last_seen"]

    @admin.display(boolean=True)
    def online(self, obj: WorkerStatus) -> bool:
        from evaluator.heartbeat import OFFLINE_AFTER

        return obj.last_seen >= timezone.now() - OFFLINE_AFTER
