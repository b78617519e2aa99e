"""The evaluator admin's forms: arms with plain fields, prompt imports, experiments, presets."""

import json
from typing import Any

from django import forms

from evaluator import imports, presets
from evaluator.admin.formatting import format_mapping, parse_mapping, parse_seeds
from evaluator.engine.context import ContextConfig, window
from evaluator.engine.depth import DepthPolicy
from evaluator.engine.generate import Sampling
from evaluator.engine.loading import Architecture
from evaluator.models import (
    CRITERIA,
    Category,
    Checkpoint,
    Experiment,
    Prompt,
    Variant,
)

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
# The largest YaRN factor an arm may ask for: far beyond any published use (Qwen3 documents 4), and small
# enough that the extended window stays a number the engine can compute with.
MAX_YARN_FACTOR = 64.0
# Names in the engine's messages → the form field that shows them.
DEPTH_MESSAGE_FIELDS = [
    ("k_min", "k_min"),
    ("k_max", "k_max"),
    ("default", "default_k"),
    ("mapping", "mapping"),
]


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
        label="YaRN factor",
        required=False,
        max_value=MAX_YARN_FACTOR,
        help_text=f"Above 1 and at most {MAX_YARN_FACTOR:g}: the native window × factor, e.g. 4.",
    )
    input_budget = forms.IntegerField(
        label="input budget",
        required=False,
        max_value=2**31 - 1,
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


class ImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header row, or JSON Lines (one object per line), UTF-8.")
    format = forms.ChoiceField(
        choices=[("", "from the file name (.csv, .jsonl)"), ("csv", "CSV"), ("jsonl", "JSON Lines")],
        required=False,
    )
    create_categories = forms.BooleanField(
        required=False, help_text="Create categories the file names that do not exist yet."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = imports.max_upload_bytes() // (1024 * 1024)
        self.fields["file"].help_text += f" At most {limit} MB."

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        message = imports.too_large(upload.size)
        if message:
            raise forms.ValidationError(message)
        return upload

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("file")
        if upload is not None and not data.get("format"):
            data["format"] = imports.format_from_name(upload.name)
            if not data["format"]:
                self.add_error("format", "Choose the format: the file name ends neither in .csv nor .jsonl.")
        return data


MAX_NEW_TOKENS = 131_072  # the longest window of the reference model (32,768 native × YaRN 4)
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
        initial="0",
        help_text="Whole numbers from 0 to 2,147,483,647 separated by commas, shared by every arm, "
        "e.g. 0, 1, 2. Each seed adds one output per arm and prompt.",
    )
    max_new_tokens = forms.IntegerField(
        min_value=1, max_value=MAX_NEW_TOKENS, initial=256, help_text="Most tokens an output may have."
    )
    min_new_tokens = forms.IntegerField(
        min_value=0,
        max_value=MAX_NEW_TOKENS,
        initial=0,
        help_text="Fewest tokens (0: an output may stop at once).",
    )
    do_sample = forms.BooleanField(required=False, initial=True, help_text="Off: greedy decoding.")
    temperature = forms.FloatField(
        initial=0.7, max_value=10, help_text="Above 0 and at most 10; used when sampling (0.7 is usual)."
    )
    top_p = forms.FloatField(initial=0.95, help_text="In (0, 1]; 1 is off.")
    top_k = forms.IntegerField(
        initial=0, min_value=0, max_value=1_000_000, help_text="Sampling top-k over tokens; 0 is off."
    )
    repetition_penalty = forms.FloatField(initial=1.0, max_value=10, help_text="Above 0; 1 is off.")
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
            "qualification_items",
            "qualification_accuracy",
            "min_seconds_per_vote",
            "priority",
            "guidelines",
        ]
        labels = {
            "gold_rate": "gold checks",
            "qualification_items": "qualification checks",
            "qualification_accuracy": "qualification pass mark",
        }
        help_texts = {
            "gold_rate": "Extra gold checks (an output against a spoiled copy of itself), as a share of the "
            "comparisons: 0.05 adds 5 per 100. Raters who fail them are left out of the results.",
            "qualification_items": "Gold checks every rater answers before any real comparison of this "
            "experiment (0: none). Raters below the pass mark get none of its comparisons.",
            "qualification_accuracy": "Share of the qualification checks a rater must get right, "
            "0 to 1: 0.8 is 80%.",
        }

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
