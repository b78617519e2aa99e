"""Admin of categories and prompts, with all-or-nothing import and CSV / JSON Lines export."""

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path

from evaluator import imports, measuring
from evaluator.admin.formatting import truncated
from evaluator.admin.forms import ImportForm
from evaluator.models import (
    Category,
    Prompt,
)


class ImportExportMixin:
    """An "Import" page (all or nothing, problems by line) and "Export as CSV / JSONL" actions."""

    change_list_template = "admin/evaluator/change_list_import.html"
    import_fields: tuple[str, ...] = ()

    def run_import(self, *, file: Any, format: str, create_categories: bool) -> imports.ImportReport:
        raise NotImplementedError

    def export(self, queryset: QuerySet, format: str) -> str:
        raise NotImplementedError

    def get_urls(self):
        opts = self.model._meta
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name=f"{opts.app_label}_{opts.model_name}_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        problems: list[imports.Problem] = []
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                report = self.run_import(
                    file=data["file"], format=data["format"], create_categories=data["create_categories"]
                )
            except imports.ImportFailed as exc:
                problems = exc.problems
            else:
                self.message_user(request, f"Imported {data['file'].name}: {report}.", messages.SUCCESS)
                return redirect(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Import {self.opts.verbose_name_plural}",
            "form": form,
            "problems": problems,
            "fields": self.import_fields,
            "is_prompt": self.model is Prompt,
        }
        return TemplateResponse(request, "admin/evaluator/import.html", context)

    def _export_response(self, queryset: QuerySet, format: str) -> HttpResponse:
        content_type = "text/csv" if format == "csv" else "application/x-ndjson"
        response = HttpResponse(self.export(queryset, format), content_type=f"{content_type}; charset=utf-8")
        filename = f"{self.opts.verbose_name_plural.replace(' ', '-')}.{format}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    @admin.action(description="Export the selected as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        return self._export_response(queryset, "csv")

    @admin.action(description="Export the selected as JSON Lines")
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        return self._export_response(queryset, "jsonl")


@admin.register(Category)
class CategoryAdmin(ImportExportMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "order", "prompt_count"]
    prepopulated_fields = {"slug": ["name"]}
    actions = ["export_csv", "export_jsonl"]
    import_fields = imports.CATEGORY_FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Category]:
        return super().get_queryset(request).annotate(prompt_count=Count("prompts"))

    @admin.display(description="prompts", ordering="prompt_count")
    def prompt_count(self, obj: Category) -> int:
        return obj.prompt_count

    def run_import(self, *, file: Any, format: str, create_categories: bool) -> imports.ImportReport:
        return imports.import_categories(file=file, format=format)

    def export(self, queryset: QuerySet, format: str) -> str:
        return imports.export_categories(categories=queryset.order_by("order", "slug"), format=format)


@admin.register(Prompt)
class PromptAdmin(ImportExportMixin, admin.ModelAdmin):
    list_display = ["id", "category", "short_text", "tags", "external_id", "reference_answer"]
    list_filter = ["category", "scoring_rule"]
    search_fields = ["text", "external_id"]
    actions = ["export_csv", "export_jsonl"]
    import_fields = imports.PROMPT_FIELDS

    @admin.display(description="text")
    def short_text(self, obj: Prompt) -> str:
        return truncated(obj.text, 80)

    def run_import(self, *, file: Any, format: str, create_categories: bool) -> imports.ImportReport:
        return imports.import_prompts(file=file, format=format, create_categories=create_categories)

    def save_model(self, request: HttpRequest, obj: Prompt, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # Outputs already stored are scored against the reference as it now stands.
        if change and {"reference_answer", "scoring_rule", "tolerance"} & set(form.changed_data):
            rescored = measuring.rescore_outputs(prompt=obj)
            if rescored:
                self.message_user(request, f"{rescored} stored outputs scored again against the reference.")

    def export(self, queryset: QuerySet, format: str) -> str:
        return imports.export_prompts(
            prompts=queryset.select_related("category").order_by("pk"), format=format
        )
