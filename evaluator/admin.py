"""Admin for what is compared: checkpoints, arms, prompts, experiments and their outputs.

An admin sets up and runs a study here without reading code: validate a checkpoint, define arms with plain
fields, import prompts, build an experiment (by hand or from a preset), schedule, pause, resume, cancel or
retry it, and watch its progress and the time it still needs.
"""

import json
import re
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from evaluator import imports, presets, services
from evaluator.engine.context import ContextConfig, window
from evaluator.engine.depth import DepthPolicy
from evaluator.engine.generate import Sampling
from evaluator.engine.loading import Architecture, CheckpointError
from evaluator.models import (
    CRITERIA,
    Category,
    Checkpoint,
    Comparison,
    Experiment,
    Generation,
    Job,
    Prompt,
    Variant,
    WorkerStatus,
)
from evaluator.selectors import Progress, experiment_progress


def describe_architecture(arch: dict) -> str:
    """One line an admin can check against the model card."""
    if not arch:
        return "not read yet: run the Validate action or save the checkpoint"
    native = arch["native_context"]
    return (
        f"{arch['family']}: {arch['num_layers']} layers ({arch['num_moe_layers']} MoE), "
        f"{arch['num_experts']} experts with {arch['default_top_k']} active per token, "
        f"native context {native:,} tokens (YaRN ×4: {native * 4:,}), "
        f"hidden size {arch['hidden_size']:,}, vocabulary {arch['vocab_size']:,}"
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
                arch = services.validate_checkpoint(checkpoint)
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


# Arms ------------------------------------------------------------------------------------------------

DEPTH_CHOICES = [
    ("fixed", "fixed: k experts for every token"),
    ("by_category", "by category: a k per prompt category"),
    ("by_tag", "by tag: a k per prompt tag (the deepest matching tag wins)"),
    ("dynamic", "dynamic: per token, the fewest experts whose router probability reaches p"),
]
CONTEXT_CHOICES = [("native", "native window"), ("yarn", "YaRN: native window × factor")]
CONTEXT_FIELDS = {"native": [], "yarn": ["factor"]}
DEPTH_FIELDS = {
    "fixed": ["k"],
    "by_category": ["mapping", "default_k"],
    "by_tag": ["mapping", "default_k"],
    "dynamic": ["p", "k_min", "k_max"],
}
# Names in the engine's messages → the form field that shows them.
DEPTH_MESSAGE_FIELDS = [
    ("k_min", "k_min"),
    ("k_max", "k_max"),
    ("default", "default_k"),
    ("mapping", "mapping"),
]


def parse_mapping(text: str) -> dict[str, int]:
    """Lines of "label: k" (or "label = k") → {label: k}; raises ValueError naming the line."""
    mapping: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"\s*([^:=]+?)\s*[:=]\s*(-?\d+)\s*", line)
        if not match:
            raise ValueError(f"Line {number} ({line.strip()!r}) is not 'label: k', e.g. 'reasoning: 16'.")
        mapping[match.group(1)] = int(match.group(2))
    if not mapping:
        raise ValueError("Give at least one 'label: k' line.")
    return mapping


def format_mapping(mapping: dict[str, int]) -> str:
    return "\n".join(f"{label}: {k}" for label, k in mapping.items())


class VariantForm(forms.ModelForm):
    """An arm in plain fields: the depth policy and the context configuration, checked against the model."""

    depth_kind = forms.ChoiceField(
        label="Expert depth",
        choices=DEPTH_CHOICES,
        initial="fixed",
        widget=forms.Select(attrs={"data-kind-fields": json.dumps(DEPTH_FIELDS)}),
    )
    k = forms.IntegerField(label="k", required=False, help_text="Experts per token.")
    mapping = forms.CharField(
        label="k per label",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One 'label: k' per line (category slugs or tags), e.g. 'philosophy: 16'.",
    )
    default_k = forms.IntegerField(label="default k", required=False, help_text="k for labels not listed.")
    p = forms.FloatField(
        label="p", required=False, help_text="Router probability mass to cover, in (0, 1], e.g. 0.9."
    )
    k_min = forms.IntegerField(label="k min", required=False, help_text="Fewest experts per token.")
    k_max = forms.IntegerField(label="k max", required=False, help_text="Most experts per token.")
    context_kind = forms.ChoiceField(
        label="Context",
        choices=CONTEXT_CHOICES,
        initial="native",
        widget=forms.Select(attrs={"data-kind-fields": json.dumps(CONTEXT_FIELDS)}),
    )
    factor = forms.FloatField(
        label="YaRN factor", required=False, help_text="At least 1; YaRN needs more than 1, e.g. 4."
    )
    input_budget = forms.IntegerField(
        label="input budget",
        required=False,
        help_text="Most prompt tokens this arm accepts; empty: the window minus the new tokens.",
    )
    depth = forms.JSONField(widget=forms.HiddenInput, required=False)
    context = forms.JSONField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Variant
        fields = ["checkpoint", "name", "depth", "context"]

    class Media:
        js = ["js/kind-fields.js"]  # shows only the fields the chosen kinds use

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        checkpoints = [c for c in Checkpoint.objects.all() if c.num_experts]
        if checkpoints:
            limits = ", ".join(
                f"{c.name}: {c.num_experts} experts, {c.default_top_k} by default, "
                f"native window {c.native_context:,}"
                for c in checkpoints
            )
            self.fields["checkpoint"].help_text = f"Depth is checked against the checkpoint ({limits})."
        if self.instance.pk and not self.is_bound:
            self._set_initial(self.instance.depth or {}, self.instance.context or {})

    def _set_initial(self, depth: dict, context: dict) -> None:
        initial = {"depth_kind": depth.get("kind", "fixed"), "context_kind": context.get("kind", "native")}
        initial.update({key: depth[key] for key in ("k", "p", "k_min", "k_max") if key in depth})
        if "default" in depth:
            initial["default_k"] = depth["default"]
        if isinstance(depth.get("mapping"), dict):
            initial["mapping"] = format_mapping(depth["mapping"])
        if context.get("kind") == "yarn":
            initial["factor"] = context.get("factor")
        initial["input_budget"] = context.get("input_budget")
        self.initial.update(initial)

    def _depth(self, data: dict) -> dict | None:
        kind = data.get("depth_kind")
        if kind not in DEPTH_FIELDS:
            return None
        missing = [name for name in DEPTH_FIELDS[kind] if data.get(name) in (None, "")]
        for name in missing:
            if name not in self.errors:
                self.add_error(name, f"Required for a {kind.replace('_', ' ')} depth.")
        if missing:
            return None
        if kind == "fixed":
            return {"kind": kind, "k": data["k"]}
        if kind == "dynamic":
            return {"kind": kind, "p": data["p"], "k_min": data["k_min"], "k_max": data["k_max"]}
        try:
            mapping = parse_mapping(data["mapping"])
        except ValueError as exc:
            self.add_error("mapping", str(exc))
            return None
        return {"kind": kind, "mapping": mapping, "default": data["default_k"]}

    def _depth_error_field(self, message: str, kind: str) -> str:
        if kind == "fixed":
            return "k"
        for word, name in DEPTH_MESSAGE_FIELDS:
            if word in message:
                return name
        if kind == "dynamic" and message.startswith("p "):
            return "p"
        return "mapping" if kind in ("by_category", "by_tag") else "depth_kind"

    def _context(self, data: dict) -> dict | None:
        kind, factor, budget = data.get("context_kind"), data.get("factor"), data.get("input_budget")
        if factor is not None and factor < 1:
            self.add_error("factor", f"The factor is {factor:g}; it must be at least 1.")
            return None
        if budget is not None and budget < 1:
            self.add_error("input_budget", "The input budget must be at least 1 token, or empty for none.")
            return None
        if kind == "native":
            if factor not in (None, 1):
                self.add_error("factor", "A native context has factor 1: choose YaRN to extend the window.")
                return None
            return {"kind": "native", "input_budget": budget} if budget else {"kind": "native"}
        if factor is None:
            self.add_error("factor", "Required for YaRN, e.g. 4.")
            return None
        context = {"kind": "yarn", "factor": float(factor)}
        return {**context, "input_budget": budget} if budget else context

    def clean(self) -> dict:
        data = super().clean()
        depth, context = self._depth(data), self._context(data)
        checkpoint = data.get("checkpoint")
        if checkpoint is not None and not checkpoint.num_experts:
            self.add_error(
                "checkpoint",
                f"Checkpoint {checkpoint} has not been read yet: run its Validate action first.",
            )
            checkpoint = None
        if depth is not None:
            try:
                policy = DepthPolicy.from_dict(depth)
                if checkpoint is not None:
                    policy.validate(checkpoint.num_experts)
            except ValueError as exc:
                self.add_error(self._depth_error_field(str(exc), depth["kind"]), str(exc))
                depth = None
        if context is not None:
            try:
                config = ContextConfig.from_dict(context)
                if checkpoint is not None:
                    config.validate(Architecture(**checkpoint.architecture))
            except ValueError as exc:
                field = "input_budget" if "input_budget" in str(exc) else "factor"
                self.add_error(field, str(exc))
                context = None
            else:
                if checkpoint is not None and context.get("input_budget"):
                    limit = window(Architecture(**checkpoint.architecture), config)
                    self.fields["input_budget"].help_text += f" The window is {limit:,} tokens."
        if self.instance.pk and depth is not None and context is not None:
            changed = depth != self.instance.depth or context != (self.instance.context or {"kind": "native"})
            used = sorted(
                set(self.instance.generations.values_list("experiment__name", flat=True).distinct()[:5])
            )
            if changed and used:
                self.add_error(
                    None,
                    f"This arm already has outputs in {', '.join(used)}: its depth and context cannot "
                    "change. Add a new arm instead.",
                )
        # Placeholders keep the model's own check quiet about problems already shown on their fields.
        data["depth"] = depth if depth is not None else {"kind": "fixed", "k": 1}
        data["context"] = context if context is not None else {"kind": "native"}
        return data


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


# Categories and prompts: import and export ------------------------------------------------------------


class ImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header row, or JSON Lines (one object per line), UTF-8.")
    format = forms.ChoiceField(
        choices=[("", "from the file name (.csv, .jsonl)"), ("csv", "CSV"), ("jsonl", "JSON Lines")],
        required=False,
    )
    create_categories = forms.BooleanField(
        required=False, help_text="Create categories the file names that do not exist yet."
    )

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("file")
        if upload is not None and not data.get("format"):
            data["format"] = imports.format_from_name(upload.name)
            if not data["format"]:
                self.add_error("format", "Choose the format: the file name ends neither in .csv nor .jsonl.")
        return data


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
    list_display = ["id", "category", "short_text", "tags", "external_id"]
    list_filter = ["category"]
    search_fields = ["text", "external_id"]
    actions = ["export_csv", "export_jsonl"]
    import_fields = imports.PROMPT_FIELDS

    @admin.display(description="text")
    def short_text(self, obj: Prompt) -> str:
        return obj.text[:80]

    def run_import(self, *, file: Any, format: str, create_categories: bool) -> imports.ImportReport:
        return imports.import_prompts(file=file, format=format, create_categories=create_categories)

    def export(self, queryset: QuerySet, format: str) -> str:
        return imports.export_prompts(
            prompts=queryset.select_related("category").order_by("pk"), format=format
        )


# Experiments ------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def time_left_text(experiment: Experiment, progress: Progress) -> str:
    if progress.outputs_total == 0:
        return "not scheduled"
    if progress.outputs_pending == 0:
        return "all outputs written"
    if experiment.status == Experiment.Status.PAUSED:
        return "paused"
    if experiment.status == Experiment.Status.CANCELLED:
        return "cancelled"
    if progress.seconds_left is None:
        return "estimated after the first outputs"
    return f"≈ {format_duration(progress.seconds_left)} at {progress.tokens_per_s:.1f} tokens/s per stream"


def progress_bar(done: int, total: int, label: str) -> str:
    return format_html(
        '<progress max="{}" value="{}"></progress> {} {} / {}', max(total, 1), done, label, done, total
    )


def _count(model: type, **filters: Any) -> Coalesce:
    rows = (
        model.objects.filter(experiment=OuterRef("pk"), **filters)
        .order_by()
        .values("experiment")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), 0)


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        if not re.fullmatch(r"-?\d+", part):
            raise forms.ValidationError(f"{part!r} is not a whole number: write seeds like 0, 1, 2.")
        if int(part) in seeds:
            raise forms.ValidationError(f"Seed {part} appears twice.")
        seeds.append(int(part))
    if not seeds:
        raise forms.ValidationError("Give at least one seed, e.g. 0.")
    return seeds


SAMPLING_FIELDS = [
    "max_new_tokens",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
]


class ExperimentForm(forms.ModelForm):
    """A draft experiment: arms, prompts (or whole categories), seeds and sampling shared by every arm."""

    categories = forms.ModelMultipleChoiceField(
        Category.objects.all(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Add every prompt of",
        help_text="The prompts of the ticked categories are added to those chosen below when you save.",
    )
    seeds = forms.CharField(
        initial="0", help_text="Whole numbers separated by commas, shared by every arm, e.g. 0, 1, 2."
    )
    max_new_tokens = forms.IntegerField(min_value=1, initial=256, help_text="Most tokens an output may have.")
    min_new_tokens = forms.IntegerField(
        min_value=0, initial=0, help_text="Fewest tokens (0: an output may stop at once)."
    )
    do_sample = forms.BooleanField(required=False, initial=True, help_text="Off: greedy decoding.")
    temperature = forms.FloatField(initial=0.7, help_text="Above 0; used when sampling.")
    top_p = forms.FloatField(initial=0.95, help_text="In (0, 1]; 1 is off.")
    top_k = forms.IntegerField(initial=0, min_value=0, help_text="Sampling top-k over tokens; 0 is off.")
    repetition_penalty = forms.FloatField(initial=1.0, help_text="Above 0; 1 is off.")
    criteria = forms.MultipleChoiceField(
        choices=list(CRITERIA.items()),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Optional verdicts per criterion, asked beside the overall vote.",
    )

    class Meta:
        model = Experiment
        fields = [
            "name",
            "checkpoint",
            "variants",
            "pairing",
            "baseline",
            "prompts",
            "raters_per_comparison",
            "gold_rate",
            "min_seconds_per_vote",
            "priority",
            "guidelines",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instance = self.instance
        self.fields["variants"].label = "Arms"
        self.fields["variants"].queryset = Variant.objects.select_related("checkpoint")
        self.fields["prompts"].required = False
        self.fields["prompts"].queryset = Prompt.objects.select_related("category")
        if instance.pk and not self.is_bound:
            self.initial["seeds"] = ", ".join(str(s) for s in instance.seeds or [])
            self.initial["criteria"] = list(instance.criteria or [])
            sampling = {**Sampling().to_dict(), **(instance.sampling or {})}
            for name in SAMPLING_FIELDS:
                self.initial[name] = sampling[name]

    def clean_seeds(self) -> list[int]:
        return parse_seeds(self.cleaned_data["seeds"])

    def clean_gold_rate(self) -> float:
        rate = self.cleaned_data["gold_rate"]
        if not 0 <= rate <= 0.5:
            raise forms.ValidationError("Between 0 (none) and 0.5.")
        return rate

    def clean_min_seconds_per_vote(self) -> float:
        seconds = self.cleaned_data["min_seconds_per_vote"]
        if seconds < 0:
            raise forms.ValidationError("0 or more seconds.")
        return seconds

    def clean_raters_per_comparison(self) -> int:
        raters = self.cleaned_data["raters_per_comparison"]
        if raters < 1:
            raise forms.ValidationError("At least 1.")
        return raters

    def clean(self) -> dict:
        data = super().clean()
        sampling = {name: data[name] for name in SAMPLING_FIELDS if data.get(name) is not None}
        if len(sampling) == len(SAMPLING_FIELDS):
            for name in ("temperature", "top_p", "repetition_penalty"):
                sampling[name] = float(sampling[name])
            try:
                Sampling.from_dict(sampling)
            except ValueError as exc:
                field = next((n for n in SAMPLING_FIELDS if str(exc).startswith(n)), None)
                self.add_error(field, str(exc))
            data["sampling"] = sampling
        checkpoint, variants = data.get("checkpoint"), list(data.get("variants") or [])
        if checkpoint is not None:
            others = [v.name for v in variants if v.checkpoint_id != checkpoint.pk]
            if others:
                self.add_error("variants", f"These arms use another checkpoint: {', '.join(others)}.")
        if variants and len(variants) < 2:
            self.add_error("variants", "Choose at least two arms to compare.")
        if data.get("pairing") == Experiment.Pairing.BASELINE:
            baseline = data.get("baseline")
            if baseline is None or baseline not in variants:
                self.add_error(
                    "baseline", "Pairing against a baseline needs a baseline chosen among the arms."
                )
        prompts = set(data.get("prompts") or [])
        categories = data.get("categories")
        if categories:
            prompts |= set(Prompt.objects.filter(category__in=categories))
        data["prompts"] = sorted(prompts, key=lambda p: p.pk)
        if not prompts and "prompts" not in self.errors:
            self.add_error("prompts", "Choose prompts, or tick categories whose prompts to add.")
        return data

    def save(self, commit: bool = True) -> Experiment:
        experiment = super().save(commit=False)
        experiment.seeds = self.cleaned_data["seeds"]
        experiment.sampling = self.cleaned_data["sampling"]
        experiment.criteria = list(self.cleaned_data["criteria"])
        if commit:
            experiment.save()
            self.save_m2m()
        return experiment


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


class PresetForm(forms.Form):
    preset = forms.ChoiceField(
        choices=[(slug, f"{p.title}: {p.description}") for slug, p in presets.PRESETS.items()],
        widget=forms.RadioSelect,
    )
    checkpoint = forms.ModelChoiceField(Checkpoint.objects.all())
    name = forms.CharField(
        required=False, max_length=200, help_text="Empty: named after the preset and date."
    )
    seeds = forms.CharField(initial="0", help_text="Whole numbers separated by commas.")
    schedule = forms.BooleanField(required=False, help_text="Schedule it at once (else it stays a draft).")

    def clean_seeds(self) -> list[int]:
        return parse_seeds(self.cleaned_data["seeds"])


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    change_list_template = "admin/evaluator/experiment/change_list.html"
    change_form_template = "admin/evaluator/experiment/change_form.html"
    list_display = [
        "name",
        "checkpoint",
        "status",
        "outputs",
        "comparisons_ready",
        "votes",
        "time_left",
        "priority",
    ]
    list_filter = ["status", "checkpoint"]
    search_fields = ["name"]
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
                n_comparisons=_count(Comparison, is_identical=False),
                n_comparisons_ready=_count(Comparison, is_identical=False, ready_at__isnull=False),
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
                    {"fields": ["raters_per_comparison", "gold_rate", "min_seconds_per_vote", "criteria"]},
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
                        "gold_rate",
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
        return [*status, *fixed, "gold_rate", "criteria"]

    def get_form(self, request: HttpRequest, obj: Experiment | None = None, change: bool = False, **kwargs):
        if obj is not None and obj.status != Experiment.Status.DRAFT:
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, change=change, **kwargs)

    # Columns and read-only fields.

    @admin.display(description="status")
    def status_line(self, obj: Experiment) -> str:
        return obj.get_status_display()

    @admin.display(description="outputs", ordering="n_outputs_done")
    def outputs(self, obj: Experiment) -> str:
        return progress_bar(obj.n_outputs_done, obj.n_outputs, "")

    @admin.display(description="comparisons ready", ordering="n_comparisons_ready")
    def comparisons_ready(self, obj: Experiment) -> str:
        return progress_bar(obj.n_comparisons_ready, obj.n_comparisons, "")

    @admin.display(description="votes")
    def votes(self, obj: Experiment) -> str:
        votes = obj.comparisons.filter(is_identical=False).aggregate(n=Coalesce(Sum("ratings_count"), 0))["n"]
        return progress_bar(votes, obj.n_comparisons * obj.raters_per_comparison, "")

    @admin.display(description="time left")
    def time_left(self, obj: Experiment) -> str:
        return time_left_text(obj, experiment_progress(obj))

    @admin.display(description="progress")
    def progress(self, obj: Experiment) -> str:
        p = experiment_progress(obj)
        failed = f" ({p.outputs_failed} failed)" if p.outputs_failed else ""
        return format_html(
            '<div class="progress-panel">{}{}<br>{}<br>{}<br>Time left: {}</div>',
            progress_bar(p.outputs_done, p.outputs_total, "Outputs"),
            failed,
            progress_bar(p.comparisons_ready, p.comparisons_total, "Comparisons ready"),
            progress_bar(p.votes, p.votes_needed, "Votes"),
            time_left_text(obj, p),
        )

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
                report = services.schedule_experiment(experiment=experiment)
                text = f"{report.generations} outputs and {report.comparisons} comparisons queued."
            elif operation == "pause":
                services.pause_experiment(experiment=experiment)
                text = "paused: running jobs stop after their batch, raters get no new comparisons."
            elif operation == "resume":
                text = f"resumed: {services.resume_experiment(experiment=experiment)} jobs queued."
            elif operation == "cancel":
                text = f"cancelled: {services.cancel_experiment(experiment=experiment)} queued jobs revoked."
            elif operation == "retry":
                text = f"{services.retry_failed(experiment=experiment)} failed outputs queued again."
            else:
                text = f"{services.requeue_unfinished(experiment=experiment)} arms queued again."
        except services.ScheduleError as exc:
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
            *super().get_urls(),
        ]

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


# Outputs, pairs, jobs and workers: read-only records --------------------------------------------------


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
