"""Admin of experiments: build one by hand or from a preset, schedule, pause, resume, cancel, retry,
and watch its progress and the time it still needs."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html_join
from django.views.decorators.http import require_GET, require_POST

from evaluator import presets, scheduling
from evaluator.admin.formatting import format_share, progress_bar, time_left_text, truncated
from evaluator.admin.forms import SAMPLING_FIELDS, ExperimentForm, PresetForm
from evaluator.models import (
    Comparison,
    Experiment,
    Generation,
)
from evaluator.selectors import experiment_progress, job_progress

PROGRESS_TEMPLATE = "admin/evaluator/experiment/progress.html"
PROGRESS_JOBS = 20


def _progress_context(experiment: Experiment) -> dict[str, Any]:
    """Outputs, comparisons and votes so far, the time left, and the experiment's latest jobs."""
    progress = experiment_progress(experiment)
    jobs = list(experiment.jobs.select_related("variant").order_by("-queued_at")[:PROGRESS_JOBS])
    by_job = job_progress(jobs=jobs, now=timezone.now())
    return {
        "experiment": experiment,
        "progress": progress,
        "time_left": time_left_text(experiment, progress),
        "jobs": [(job, by_job[job.pk]) for job in jobs],
        "polling": experiment.status in (Experiment.Status.SCHEDULED, Experiment.Status.PAUSED),
    }


def _count(model: type, *, total: Any = None, **filters: Any) -> Coalesce:
    """Per experiment: how many `model` rows match `filters`, or the sum of `total` over them."""
    rows = (
        model.objects.filter(experiment=OuterRef("pk"), **filters)
        .order_by()
        .values("experiment")
        .annotate(n=Sum(total) if total else Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), 0)


# Fields an admin may still change once outputs exist: they change rating, not generation.
LIVE_FIELDS = ["priority", "raters_per_comparison", "min_seconds_per_vote", "guidelines"]
OPERATIONS = {
    "schedule": ("Schedule", {Experiment.Status.DRAFT}),
    "pause": ("Pause", {Experiment.Status.SCHEDULED}),
    "resume": ("Resume", {Experiment.Status.PAUSED}),
    "cancel": ("Cancel", {Experiment.Status.SCHEDULED, Experiment.Status.PAUSED}),
    "retry": ("Retry failed outputs", {Experiment.Status.SCHEDULED, Experiment.Status.DONE}),
    "requeue": ("Queue unfinished arms again", {Experiment.Status.SCHEDULED}),
}


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    change_list_template = "admin/evaluator/experiment/change_list.html"
    change_form_template = "admin/evaluator/experiment/change_form.html"
    # Fits a laptop screen: the checkpoint is a filter, comparisons and speed are on the change page.
    list_display = ["short_name", "status", "outputs", "votes", "time_left", "priority"]
    list_display_links = ["short_name"]
    list_filter = ["status", "checkpoint"]
    search_fields = ["name"]

    class Media:
        css = {"all": ["css/admin.css"]}

    filter_horizontal = ["variants", "prompts"]
    actions = ["schedule", "pause", "resume", "cancel", "retry_failed", "requeue_unfinished"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Experiment]:
        return (
            super()
            .get_queryset(request)
            .select_related("checkpoint")
            .annotate(
                n_outputs=_count(Generation),
                n_outputs_done=_count(Generation, status=Generation.Status.DONE),
                n_comparisons=_count(Comparison, is_identical=False, qualification=False),
                n_comparisons_ready=_count(
                    Comparison, is_identical=False, qualification=False, ready_at__isnull=False
                ),
                n_votes=_count(Comparison, total="ratings_count", is_identical=False, qualification=False),
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj: Experiment | None = None):
        status = ["status_line", "progress", "schedule_error", "scheduled_at", "preset"]
        if obj is None or obj.status == Experiment.Status.DRAFT:
            fieldsets = [
                (None, {"fields": ["name", "checkpoint"]}),
                ("Arms", {"fields": ["variants", "pairing", "baseline"]}),
                ("Prompts", {"fields": ["categories", "prompts", "seeds"]}),
                ("Sampling, shared by every arm", {"fields": SAMPLING_FIELDS}),
                (
                    "Rating",
                    {
                        "fields": [
                            "raters_per_comparison",
                            "gold_rate",
                            "qualification_items",
                            "qualification_accuracy",
                            "min_seconds_per_vote",
                            "criteria",
                        ]
                    },
                ),
                ("Order and instructions", {"fields": ["priority", "guidelines"]}),
            ]
            return [("Status", {"fields": status}), *fieldsets] if obj else fieldsets
        return [
            ("Status", {"fields": status}),
            (
                "Set when scheduled",
                {
                    "fields": [
                        "name",
                        "checkpoint",
                        "arms",
                        "pairing",
                        "baseline",
                        "prompt_summary",
                        "seeds",
                        "sampling",
                        "gold_share",
                        "qualification",
                        "criteria",
                    ]
                },
            ),
            ("May still change", {"fields": LIVE_FIELDS}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None):
        status = ["status_line", "progress", "schedule_error", "scheduled_at", "preset"]
        if obj is None or obj.status == Experiment.Status.DRAFT:
            return status
        fixed = ["name", "checkpoint", "arms", "pairing", "baseline", "prompt_summary", "seeds", "sampling"]
        return [*status, *fixed, "gold_share", "qualification", "criteria"]

    def get_form(self, request: HttpRequest, obj: Experiment | None = None, change: bool = False, **kwargs):
        if obj is not None and obj.status != Experiment.Status.DRAFT:
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change=change, **kwargs)

    # Columns and read-only fields.

    @admin.display(description="status")
    def status_line(self, obj: Experiment) -> str:
        return obj.get_status_display()

    @admin.display(description="name", ordering="name")
    def short_name(self, obj: Experiment) -> str:
        return truncated(obj.name, 48)

    @admin.display(description="gold checks")
    def gold_share(self, obj: Experiment) -> str:
        return f"{format_share(obj.gold_rate)} of the comparisons" if obj.gold_rate else "none"

    @admin.display(description="qualification")
    def qualification(self, obj: Experiment) -> str:
        if not obj.qualification_items:
            return "none"
        return (
            f"{obj.qualification_items} checks before any real comparison; "
            f"pass mark {format_share(obj.qualification_accuracy)}"
        )

    @admin.display(description="outputs", ordering="n_outputs_done")
    def outputs(self, obj: Experiment) -> str:
        return progress_bar(obj.n_outputs_done, obj.n_outputs, "")

    @admin.display(description="votes", ordering="n_votes")
    def votes(self, obj: Experiment) -> str:
        return progress_bar(obj.n_votes, obj.n_comparisons * obj.raters_per_comparison, "")

    @admin.display(description="time left")
    def time_left(self, obj: Experiment) -> str:
        return time_left_text(obj, experiment_progress(obj), speed=False)

    @admin.display(description="progress")
    def progress(self, obj: Experiment) -> str:
        """The live panel: re-fetched from progress_view on every change event, and every few seconds."""
        return render_to_string(PROGRESS_TEMPLATE, _progress_context(obj))

    @admin.display(description="arms")
    def arms(self, obj: Experiment) -> str:
        rows = []
        for variant in obj.variants.order_by("pk"):
            description = variant.describe()
            rows.append((variant.name, f": {description}" if description != variant.name else ""))
        return format_html_join("", "<div>{}{}</div>", rows)

    @admin.display(description="prompts")
    def prompt_summary(self, obj: Experiment) -> str:
        counts = obj.prompts.values("category__name").annotate(n=Count("pk")).order_by("category__name")
        total = sum(row["n"] for row in counts)
        return f"{total} prompts: " + ", ".join(f"{row['category__name']} {row['n']}" for row in counts)

    # Operations, from the list (actions) and from the change page (buttons).

    def _operate(self, request: HttpRequest, experiment: Experiment, operation: str) -> bool:
        """Run one operation through its service and say what happened. Returns whether it worked."""
        try:
            if operation == "schedule":
                report = scheduling.schedule_experiment(experiment=experiment)
                text = f"{report.generations} outputs and {report.comparisons} comparisons queued."
            elif operation == "pause":
                scheduling.pause_experiment(experiment=experiment)
                text = "paused: running jobs stop after their batch, raters get no new comparisons."
            elif operation == "resume":
                text = f"resumed: {scheduling.resume_experiment(experiment=experiment)} jobs queued."
            elif operation == "cancel":
                text = (
                    f"cancelled: {scheduling.cancel_experiment(experiment=experiment)} queued jobs revoked."
                )
            elif operation == "retry":
                text = f"{scheduling.retry_failed(experiment=experiment)} failed outputs queued again."
            else:
                text = f"{scheduling.requeue_unfinished(experiment=experiment)} arms queued again."
        except scheduling.ScheduleError as exc:
            for problem in exc.problems:
                self.message_user(request, f"{experiment}: {problem}", messages.ERROR)
            return False
        except Exception as exc:
            self.message_user(
                request, f"{experiment}: {OPERATIONS[operation][0].lower()} failed: {exc}", messages.ERROR
            )
            return False
        self.message_user(request, f"{experiment}: {text}", messages.SUCCESS)
        return True

    def _operate_all(self, request: HttpRequest, queryset: QuerySet[Experiment], operation: str) -> None:
        for experiment in queryset:
            self._operate(request, experiment, operation)

    @admin.action(description="Schedule the selected experiments", permissions=["change"])
    def schedule(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._operate_all(request, queryset, "schedule")

    @admin.action(description="Pause the selected experiments", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._operate_all(request, queryset, "pause")

    @admin.action(description="Resume the selected experiments", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._operate_all(request, queryset, "resume")

    @admin.action(description="Cancel the selected experiments (asks first)", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Experiment]):
        if request.POST.get("confirmed") != "yes":
            return self._confirm_cancel(request, queryset, form_action="")
        self._operate_all(request, queryset, "cancel")
        return None

    def _confirm_cancel(
        self, request: HttpRequest, experiments: Any, *, form_action: str
    ) -> TemplateResponse:
        """Cancelling is final: ask first. form_action "" posts back to the list's action."""
        return TemplateResponse(
            request,
            "admin/evaluator/experiment/confirm_cancel.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "Cancel experiments?",
                "experiments": experiments,
                "form_action": form_action,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description="Retry failed outputs", permissions=["change"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._operate_all(request, queryset, "retry")

    @admin.action(
        description="Queue unfinished arms again (after a lost queue or worker)", permissions=["change"]
    )
    def requeue_unfinished(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._operate_all(request, queryset, "requeue")

    def get_urls(self):
        return [
            path(
                "add-from-preset/",
                self.admin_site.admin_view(self.preset_view),
                name="evaluator_experiment_preset",
            ),
            path(
                "<int:object_id>/operate/<str:operation>/",
                self.admin_site.admin_view(require_POST(self.operate_view)),
                name="evaluator_experiment_operate",
            ),
            path(
                "<int:object_id>/progress/",
                self.admin_site.admin_view(require_GET(self.progress_view)),
                name="evaluator_experiment_progress",
            ),
            *super().get_urls(),
        ]

    def progress_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        experiment = get_object_or_404(Experiment, pk=object_id)
        if not self.has_view_permission(request, experiment):
            raise PermissionDenied
        return TemplateResponse(request, PROGRESS_TEMPLATE, _progress_context(experiment))

    def operate_view(self, request: HttpRequest, object_id: int, operation: str) -> HttpResponse:
        experiment = get_object_or_404(Experiment, pk=object_id)
        if not self.has_change_permission(request, experiment):
            raise PermissionDenied
        if operation not in OPERATIONS:
            raise PermissionDenied(f"Unknown operation {operation!r}.")
        if operation == "cancel" and request.POST.get("confirmed") != "yes":
            return self._confirm_cancel(request, [experiment], form_action=request.path)
        self._operate(request, experiment, operation)
        return redirect("admin:evaluator_experiment_change", experiment.pk)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        experiment = self.get_object(request, object_id)
        operations = []
        if experiment is not None:
            needs = {
                "retry": experiment.generations.filter(status=Generation.Status.FAILED).exists(),
                "requeue": experiment.generations.filter(status=Generation.Status.PENDING).exists(),
            }
            for name, (label, statuses) in OPERATIONS.items():
                if experiment.status in statuses and needs.get(name, True):
                    operations.append((name, label))
        extra_context = {**(extra_context or {}), "operations": operations}
        return super().change_view(request, object_id, form_url, extra_context)

    def preset_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        initial = {"checkpoint": request.GET.get("checkpoint")}
        form = PresetForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                experiment = presets.create_from_preset(
                    preset=data["preset"],
                    checkpoint=data["checkpoint"],
                    name=data["name"],
                    seeds=data["seeds"],
                )
            except presets.PresetError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    f"Created {experiment}: {experiment.variants.count()} arms, "
                    f"{experiment.prompts.count()} prompts.",
                    messages.SUCCESS,
                )
                if data["schedule"]:
                    self._operate(request, experiment, "schedule")
                return redirect("admin:evaluator_experiment_change", experiment.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Add an experiment from a preset",
            "form": form,
        }
        return TemplateResponse(request, "admin/evaluator/experiment/add_from_preset.html", context)
