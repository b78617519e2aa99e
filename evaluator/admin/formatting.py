"""What the evaluator admin shows and reads back: architecture lines, durations, progress, seeds, maps."""

import re

from django import forms
from django.utils.html import format_html

from evaluator.models import (
    Experiment,
)
from evaluator.scheduling import MAX_SEED
from evaluator.selectors import Progress


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


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def time_left_text(experiment: Experiment, progress: Progress, *, speed: bool = True) -> str:
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
    left = f"≈ {format_duration(progress.seconds_left)}"
    return f"{left} at {format_rate(progress.tokens_per_s)} tokens/s per stream" if speed else left


def format_rate(value: float | None) -> str:
    """A speed as people read it: whole numbers from 10 up (111.77 → "112"), one decimal below."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}"


def format_seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} s"


def format_share(value: float | None) -> str:
    """A share 0..1 as a percentage: 0.1 → "10%", 0.125 → "12.5%"."""
    if value is None:
        return "–"
    return f"{value * 100:.1f}".removesuffix(".0") + "%"


def truncated(text: str, length: int) -> str:
    """The text's start on one line, with the whole text as a tooltip."""
    line = " ".join(text.split())
    if len(line) <= length:
        return line
    cut = line[: length - 1]
    if " " in cut[-15:]:  # end on a whole word when one ends near the limit
        cut = cut[: cut.rfind(" ")]
    return format_html('<span title="{}">{}…</span>', text, cut.rstrip())


def progress_bar(done: int, total: int, label: str) -> str:
    return format_html(
        '<progress max="{}" value="{}"></progress> {} {} / {}', max(total, 1), done, label, done, total
    )


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        if not re.fullmatch(r"-?\d+", part):
            raise forms.ValidationError(f"{part!r} is not a whole number: write seeds like 0, 1, 2.")
        if len(part) > 12 or not 0 <= int(part) <= MAX_SEED:
            shown = part if len(part) <= 12 else f"{part[:6]}…{part[-3:]} ({len(part)} digits)"
            raise forms.ValidationError(f"Seed {shown} is out of range: seeds go from 0 to {MAX_SEED:,}.")
        if int(part) in seeds:
            raise forms.ValidationError(f"Seed {part} appears twice.")
        seeds.append(int(part))
    if not seeds:
        raise forms.ValidationError("Give at least one seed, e.g. 0.")
    return seeds
