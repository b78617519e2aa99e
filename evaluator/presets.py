"""Ready-made experiments: one call turns a checkpoint into a draft experiment with arms scaled to it.

Depths are expressed relative to the checkpoint's own top-k d and capped at its number of experts, so the
same preset gives 8 vs 16 on Qwen3-30B-A3B (128 experts, 8 active) and 4 vs 8 on the small demo model.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from evaluator import memory_suite, scheduling
from evaluator.engine.context import ContextConfig
from evaluator.engine.depth import DepthPolicy, normalize_label
from evaluator.engine.loading import CheckpointError
from evaluator.models import Checkpoint, Experiment, Prompt, Variant

# Prompts that need a long window: by category or by tag.
LONG_CONTEXT_LABELS = ("long_context", "long-context", "long")
# Tags that ask for deeper routing, and tags that say a short, routine answer is enough.
DEEP_TAGS = ("reasoning", "philosophy", "math", "analysis", "hard")
SHALLOW_TAGS = ("routine", "short", "email", "template", "easy")
YARN_FACTOR = 4.0
GUIDELINES = "Pick the answer that serves the prompt better. Short and right beats long and wandering."


class PresetError(Exception):
    """The preset cannot be built for this checkpoint or these prompts; nothing was created."""


@dataclass(frozen=True)
class Arm:
    depth: dict[str, Any]
    context: dict[str, Any] = field(default_factory=lambda: {"kind": "native"})


@dataclass(frozen=True)
class Plan:
    """What a preset asks for on one checkpoint: arms (the first is the baseline), pairing, prompts."""

    arms: list[Arm]
    pairing: str
    prompts: list[int]
    criteria: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Preset:
    slug: str
    title: str
    description: str
    plan: Callable[[Checkpoint], Plan]


def scaled_depths(num_experts: int, top_k: int, factors: tuple[float, ...]) -> list[int]:
    """top_k × each factor, rounded, kept within 1..num_experts, without repeats, in order."""
    depths: list[int] = []
    for factor in factors:
        k = min(num_experts, max(1, round(top_k * factor)))
        if k not in depths:
            depths.append(k)
    return depths


def fixed(k: int, context: dict[str, Any] | None = None) -> Arm:
    return Arm({"kind": "fixed", "k": k}, context or {"kind": "native"})


def _all_prompts() -> list[int]:
    return [pk for pk, tags in Prompt.objects.order_by("pk").values_list("pk", "tags") if _fits_native(tags)]


def _fits_native(tags: list | None) -> bool:
    """Not a memory-suite prompt that needs YaRN or thousands of new tokens (evaluator.memory_suite)."""
    return not {memory_suite.YARN_ONLY_TAG, memory_suite.LONG_OUTPUT_TAG} & set(tags or [])


def _memory_needles() -> list[int]:
    return [
        pk
        for pk, tags in Prompt.objects.order_by("pk").values_list("pk", "tags")
        if memory_suite.MEMORY_TAG in (tags or []) and memory_suite.LONG_OUTPUT_TAG not in (tags or [])
    ]


def _long_prompts() -> list[int]:
    """Prompts in a long-context category or with a long-context tag (tags are read here: SQLite has no
    JSON containment lookup)."""
    labels = {normalize_label(label) for label in LONG_CONTEXT_LABELS}
    return [
        pk
        for pk, slug, tags in Prompt.objects.order_by("pk").values_list("pk", "category__slug", "tags")
        if (normalize_label(slug) in labels or labels & {normalize_label(str(t)) for t in tags or []})
        and _fits_native(tags)
    ]


def _base_vs_extreme(checkpoint: Checkpoint) -> Plan:
    d, experts = checkpoint.default_top_k, checkpoint.num_experts
    depths = scaled_depths(experts, d, (1, 2))
    if len(depths) < 2:
        raise PresetError(f"{checkpoint.name} uses all {experts} experts already: there is no deeper arm.")
    return Plan([fixed(k) for k in depths], Experiment.Pairing.ALL_PAIRS, _all_prompts())


def _depth_sweep(checkpoint: Checkpoint) -> Plan:
    depths = scaled_depths(checkpoint.num_experts, checkpoint.default_top_k, (0.25, 0.5, 1, 2))
    return Plan([fixed(k) for k in sorted(depths)], Experiment.Pairing.ADJACENT, _all_prompts())


def _native_vs_yarn(checkpoint: Checkpoint) -> Plan:
    d = checkpoint.default_top_k
    arms = [fixed(d, {"kind": "native"}), fixed(d, {"kind": "yarn", "factor": YARN_FACTOR})]
    return Plan(arms, Experiment.Pairing.ALL_PAIRS, _long_prompts())


def _yarn_memory(checkpoint: Checkpoint) -> Plan:
    d, experts = checkpoint.default_top_k, checkpoint.num_experts
    yarn = {"kind": "yarn", "factor": YARN_FACTOR}
    depths = scaled_depths(experts, d, (1, 2))
    if len(depths) < 2:
        raise PresetError(f"{checkpoint.name} uses all {experts} experts already: there is no deeper arm.")
    return Plan([fixed(k, yarn) for k in depths], Experiment.Pairing.ALL_PAIRS, _memory_needles())


def _tag_depth(checkpoint: Checkpoint) -> Plan:
    d, experts = checkpoint.default_top_k, checkpoint.num_experts
    deep = min(experts, 2 * d)
    shallow = max(1, d // 2)
    mapping = {tag: deep for tag in DEEP_TAGS} | {tag: shallow for tag in SHALLOW_TAGS}
    arms = [fixed(d), Arm({"kind": "by_tag", "mapping": mapping, "default": d})]
    return Plan(arms, Experiment.Pairing.BASELINE, _all_prompts())


def _dynamic_vs_fixed(checkpoint: Checkpoint) -> Plan:
    d, experts = checkpoint.default_top_k, checkpoint.num_experts
    dynamic = {"kind": "dynamic", "p": 0.9, "k_min": max(1, d // 2), "k_max": min(experts, 2 * d)}
    return Plan([fixed(d), Arm(dynamic)], Experiment.Pairing.BASELINE, _all_prompts())


PRESETS: dict[str, Preset] = {
    preset.slug: preset
    for preset in [
        Preset(
            "base-vs-extreme",
            "Base vs Extreme",
            "The checkpoint's own top-k d against 2d (8 vs 16 experts on Qwen3-30B-A3B), on every prompt.",
            _base_vs_extreme,
        ),
        Preset(
            "depth-sweep",
            "Depth sweep",
            "d/4, d/2, d and 2d experts (2/4/8/16 on Qwen3-30B-A3B), each against the next deeper one.",
            _depth_sweep,
        ),
        Preset(
            "native-vs-yarn",
            "Native context vs YaRN ×4",
            "Top-k d with the native window against YaRN factor 4, on the long-context prompts that fit the "
            "native window (the memory suite's needles among them: manage.py make_memory_prompts).",
            _native_vs_yarn,
        ),
        Preset(
            "yarn-memory",
            "Memory beyond the native window (YaRN ×4)",
            "The memory suite's needles up to 4× the native window (64k and 128k on Qwen3-30B-A3B) under "
            "YaRN ×4, at depth d and 2d: recall by length and by where the fact sits.",
            _yarn_memory,
        ),
        Preset(
            "tag-depth",
            "Prompt tag → depth vs fixed d",
            f"2d experts for prompts tagged {', '.join(DEEP_TAGS)}; d/2 for {', '.join(SHALLOW_TAGS)}; "
            "d otherwise; against fixed d.",
            _tag_depth,
        ),
        Preset(
            "dynamic-vs-fixed",
            "Dynamic depth vs fixed d",
            "Per token, the fewest experts covering 90% of router probability (d/2 to 2d), against fixed d.",
            _dynamic_vs_fixed,
        ),
    ]
}


def default_sampling(checkpoint: Checkpoint) -> dict[str, Any]:
    """Sampled decoding, with room for the answer: 256 new tokens, or a quarter of a small window."""
    return {
        "max_new_tokens": max(16, min(256, (checkpoint.native_context or 1024) // 4)),
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.95,
    }


def ensure_validated(checkpoint: Checkpoint) -> Checkpoint:
    """Read the checkpoint's architecture if it was never read; raise PresetError when it is refused."""
    if checkpoint.num_experts and checkpoint.default_top_k:
        return checkpoint
    try:
        scheduling.validate_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise PresetError(f"Checkpoint {checkpoint.name!r} cannot be used: {exc}") from exc
    return checkpoint


def _variant_for(checkpoint: Checkpoint, arm: Arm) -> Variant:
    """The checkpoint's arm with this depth and context, reused when it exists, else created and named."""
    policy = DepthPolicy.from_dict(arm.depth)
    context = ContextConfig.from_dict(arm.context)
    for variant in checkpoint.variants.all():
        try:
            same = variant.depth_policy == policy and variant.context_config == context
        except (ValueError, KeyError, TypeError):
            continue
        if same:
            return variant
    base = f"{policy.describe()}, {context.describe()}"[:90]
    name, n = base, 1
    while checkpoint.variants.filter(name=name).exists():
        n += 1
        name = f"{base} ({n})"
    variant = Variant(checkpoint=checkpoint, name=name, depth=arm.depth, context=arm.context)
    variant.full_clean()
    variant.save()
    return variant


def _unique_name(title: str, checkpoint: Checkpoint) -> str:
    base = f"{title} · {checkpoint.name} · {timezone.now():%Y-%m-%d %H:%M}"[:190]
    name, n = base, 1
    while Experiment.objects.filter(name=name).exists():
        n += 1
        name = f"{base} #{n}"
    return name


def create_from_preset(
    *, preset: str, checkpoint: Checkpoint, name: str = "", seeds: list[int] | None = None
) -> Experiment:
    """A draft experiment built from a preset: arms scaled to the checkpoint, prompts, shared sampling."""
    if preset not in PRESETS:
        raise PresetError(f"Unknown preset {preset!r}: choose one of {', '.join(PRESETS)}.")
    spec = PRESETS[preset]
    with transaction.atomic():
        checkpoint = ensure_validated(checkpoint)
        plan = spec.plan(checkpoint)
        prompts = plan.prompts
        if not prompts:
            wanted = {"native-vs-yarn": "long-context prompts", "yarn-memory": "memory-suite prompts"}
            raise PresetError(
                f"There are no {wanted.get(preset, 'prompts')} yet: import some first (admin → Prompts → "
                f"Import), or run manage.py make_memory_prompts --checkpoint {checkpoint.name}."
            )
        if name and Experiment.objects.filter(name=name).exists():
            raise PresetError(f"An experiment named {name!r} exists already: choose another name.")
        try:
            variants = [_variant_for(checkpoint, arm) for arm in plan.arms]
        except Exception as exc:
            raise PresetError(f"{spec.title} does not fit {checkpoint.name}: {exc}") from exc
        experiment = Experiment.objects.create(
            name=name or _unique_name(spec.title, checkpoint),
            checkpoint=checkpoint,
            seeds=seeds if seeds is not None else [0],
            sampling=default_sampling(checkpoint),
            pairing=plan.pairing,
            baseline=variants[0] if plan.pairing == Experiment.Pairing.BASELINE else None,
            criteria=plan.criteria,
            preset=preset,
            guidelines=GUIDELINES,
        )
        experiment.variants.set(variants)
        experiment.prompts.set(prompts)
    return experiment
