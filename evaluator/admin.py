"""Admin for what is compared: checkpoints, arms, prompts, experiments and their outputs."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from evaluator import services
from evaluator.models import Category, Checkpoint, Comparison, Experiment, Generation, Prompt, Variant


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "family",
        "num_layers",
        "num_experts",
        "default_top_k",
        "native_context",
        "validated_at",
    ]
    readonly_fields = [
        "family",
        "num_layers",
        "num_experts",
        "default_top_k",
        "native_context",
        "max_position_embeddings",
        "architecture",
        "validated_at",
    ]


@admin.register(Variant)
class VariantAdmin(admin.ModelAdmin):
    list_display = ["name", "checkpoint", "description"]
    list_filter = ["checkpoint"]

    @admin.display(description="arm")
    def description(self, obj: Variant) -> str:
        try:
            return obj.describe()
        except (ValueError, KeyError, TypeError) as exc:
            return f"invalid: {exc}"


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "order"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "category", "short_text", "tags"]
    list_filter = ["category"]
    search_fields = ["text", "external_id"]

    @admin.display(description="text")
    def short_text(self, obj: Prompt) -> str:
        return obj.text[:80]


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "checkpoint", "status", "priority", "raters_per_comparison", "scheduled_at"]
    list_filter = ["status", "checkpoint"]
    filter_horizontal = ["variants", "prompts"]
    readonly_fields = ["status", "schedule_error", "scheduled_at"]
    actions = ["schedule", "retry_failed"]

    @admin.action(description="Schedule the selected experiments")
    def schedule(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for experiment in queryset:
            try:
                report = services.schedule_experiment(experiment=experiment)
            except services.ScheduleError as exc:
                for problem in exc.problems:
                    self.message_user(request, f"{experiment}: {problem}", messages.ERROR)
                continue
            self.message_user(
                request,
                f"{experiment}: {report.generations} outputs and {report.comparisons} comparisons queued.",
                messages.SUCCESS,
            )

    @admin.action(description="Retry failed outputs")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for experiment in queryset:
            count = services.retry_failed(experiment=experiment)
            self.message_user(request, f"{experiment}: {count} failed outputs queued again.")


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "experiment",
        "variant",
        "prompt_id",
        "seed",
        "status",
        "new_tokens",
        "tokens_per_s",
        "error",
    ]
    list_filter = ["status", "experiment", "variant"]
    readonly_fields = [f.name for f in Generation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "experiment", "prompt_id", "seed", "ready_at", "is_identical", "ratings_count"]
    list_filter = ["experiment", "is_identical"]
    readonly_fields = [f.name for f in Comparison._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
