"""Admin of checkpoints: validate a folder and read its architecture, start an experiment from it."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from evaluator import scheduling
from evaluator.admin.formatting import describe_architecture
from evaluator.engine.loading import CheckpointError
from evaluator.models import (
    Checkpoint,
)


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["name", "path", "family", "experts", "native_context", "validated_at"]
    readonly_fields = ["summary", *Checkpoint.ARCHITECTURE_FIELDS[1:], "architecture"]
    fieldsets = [
        (None, {"fields": ["name", "path", "dtype"]}),
        (
            "Read from the folder when saved or validated",
            {"fields": ["summary", *Checkpoint.ARCHITECTURE_FIELDS[1:], "architecture"]},
        ),
    ]
    actions = ["validate", "experiment_from_preset"]

    @admin.display(description="experts (active / total)")
    def experts(self, obj: Checkpoint) -> str:
        return f"{obj.default_top_k} / {obj.num_experts}" if obj.num_experts else "–"

    @admin.display(description="architecture")
    def summary(self, obj: Checkpoint) -> str:
        return describe_architecture(obj.architecture)

    @admin.action(description="Validate: read the folder and show the architecture")
    def validate(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        for checkpoint in queryset:
            try:
                arch = scheduling.validate_checkpoint(checkpoint)
            except CheckpointError as exc:
                self.message_user(request, f"{checkpoint}: refused. {exc}", messages.ERROR)
                continue
            self.message_user(
                request, f"{checkpoint}: {describe_architecture(arch.to_dict())}.", messages.SUCCESS
            )

    @admin.action(description="Create an experiment from a preset")
    def experiment_from_preset(self, request: HttpRequest, queryset: QuerySet[Checkpoint]):
        checkpoint = queryset.first()
        url = reverse("admin:evaluator_experiment_preset")
        return HttpResponseRedirect(f"{url}?checkpoint={checkpoint.pk}" if checkpoint else url)
