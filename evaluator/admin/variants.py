"""Admin of arms: a depth policy and a context configuration of one checkpoint, in plain fields."""

from django.contrib import admin

from evaluator.admin.forms import VariantForm
from evaluator.models import (
    Variant,
)


@admin.register(Variant)
class VariantAdmin(admin.ModelAdmin):
    form = VariantForm
    list_display = ["name", "checkpoint", "description", "used_in"]
    list_filter = ["checkpoint"]
    search_fields = ["name"]
    readonly_fields = ["description"]
    fieldsets = [
        (None, {"fields": ["checkpoint", "name", "description"]}),
        (
            "Expert depth",
            {
                "fields": ["depth_kind", "k", "mapping", "default_k", "p", "k_min", "k_max"],
                "description": "Fill the fields the chosen kind needs: fixed → k; by category or by tag → "
                "k per label and default k; dynamic → p, k min and k max.",
            },
        ),
        ("Context", {"fields": ["context_kind", "factor", "input_budget", "depth", "context"]}),
    ]

    @admin.display(description="arm")
    def description(self, obj: Variant) -> str:
        if obj.pk is None:
            return "shown once saved"
        try:
            return obj.describe()
        except (ValueError, KeyError, TypeError) as exc:
            return f"invalid: {exc}"

    @admin.display(description="experiments")
    def used_in(self, obj: Variant) -> int:
        return obj.experiments.count()
