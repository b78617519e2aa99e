"""Context configurations (native window or YaRN ×F, plus an input budget) and applying one without reloading.

`apply_context` swaps the model's rotary-embedding module for one built from a copy of the config with
`rope_parameters` (rope_theta included: the older `rope_scaling` override silently falls back to the default
theta), then puts the original back. Built modules are cached on the LoadedModel: switching is a setattr.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from .loading import Architecture, LoadedModel

CONTEXT_KINDS = ("native", "yarn")


@dataclass(frozen=True)
class ContextConfig:
    """native, or yarn with factor F over the native window; input_budget caps prompt tokens (None: none)."""

    kind: str = "native"
    factor: float = 1.0
    input_budget: int | None = None

    @classmethod
    def native(cls, input_budget: int | None = None) -> ContextConfig:
        return cls("native", 1.0, input_budget)

    @classmethod
    def yarn(cls, factor: float, input_budget: int | None = None) -> ContextConfig:
        return cls("yarn", float(factor), input_budget)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContextConfig:
        if not isinstance(data, Mapping):
            raise ValueError(f"A context configuration is a JSON object, got {type(data).__name__}")
        unknown = set(data) - {"kind", "factor", "input_budget"}
        if unknown:
            raise ValueError(
                f"Unknown context configuration keys {sorted(unknown)}: use kind, factor, input_budget"
            )
        kind = data.get("kind", "native")
        if kind not in CONTEXT_KINDS:
            raise ValueError(f"Unknown context kind {kind!r}: use 'native' or 'yarn'")
        factor = data.get("factor", 1.0)
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise ValueError(f"factor must be a number >= 1, got {factor!r}")
        budget = data.get("input_budget")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)):
            raise ValueError(f"input_budget must be a whole number of tokens or null, got {budget!r}")
        return cls(kind, float(factor), budget)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "factor": self.factor, "input_budget": self.input_budget}

    def describe(self) -> str:
        text = "native context" if self.kind == "native" else f"YaRN ×{self.factor:g}"
        return f"{text}, input ≤ {self.input_budget:,} tokens" if self.input_budget else text

    def validate(self, arch: Architecture) -> None:
        """Raise ValueError saying what to change if this configuration cannot run on the architecture."""
        if self.kind not in CONTEXT_KINDS:
            raise ValueError(f"Unknown context kind {self.kind!r}: use 'native' or 'yarn'")
        if self.kind == "native" and self.factor != 1.0:
            raise ValueError(
                f"A native context has factor 1, got {self.factor:g}: use kind 'yarn' to extend it"
            )
        if self.kind == "yarn" and not self.factor > 1.0:
            raise ValueError(
                f"YaRN needs a factor above 1 (e.g. 4), got {self.factor:g}; factor 1 is 'native'"
            )
        if self.factor > MAX_YARN_FACTOR:
            raise ValueError(
                f"A YaRN factor of {self.factor:g} is beyond what any model is extended by: use at most "
                f"{MAX_YARN_FACTOR} (Qwen3 documents 4)"
            )
        if self.input_budget is not None:
            limit = window(arch, self)
            if not 1 <= self.input_budget < limit:
                raise ValueError(
                    f"input_budget is {self.input_budget}, but it must be between 1 and {limit - 1} tokens "
                    f"(the window is {limit:,} and generation needs room)"
                )

    def key(self) -> tuple[str, float]:
        return (self.kind, self.factor)


MAX_YARN_FACTOR = 64


def window(arch: Architecture, cfg: ContextConfig) -> int:
    """Positions the configuration covers: the native window, or native × factor with YaRN."""
    return arch.native_context if cfg.kind == "native" else int(arch.native_context * cfg.factor)


def input_limit(arch: Architecture, cfg: ContextConfig, max_new_tokens: int) -> int:
    """Most prompt tokens an arm accepts: the budget, and room left in the window for the generated tokens."""
    room = window(arch, cfg) - max_new_tokens
    limit = room if cfg.input_budget is None else min(cfg.input_budget, room)
    return max(limit, 0)


def _rope_parameters(
    arch: Architecture, cfg: ContextConfig, loaded_rope: Mapping[str, Any]
) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": loaded_rope.get("rope_theta", arch.rope_theta),
    }
    if "partial_rotary_factor" in loaded_rope:
        parameters["partial_rotary_factor"] = loaded_rope["partial_rotary_factor"]
    if cfg.kind == "yarn":
        parameters.update(
            rope_type="yarn", factor=cfg.factor, original_max_position_embeddings=arch.native_context
        )
    return parameters


def _matches(loaded_rope: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the checkpoint's own rotary module already is the wanted one (then nothing is swapped)."""
    if loaded_rope.get("rope_type", "default") != wanted["rope_type"]:
        return False
    return wanted["rope_type"] == "default" or (
        float(loaded_rope.get("factor", 0.0)) == wanted["factor"]
        and loaded_rope.get("original_max_position_embeddings") == wanted["original_max_position_embeddings"]
    )


def _build_rotary(original: nn.Module, arch: Architecture, cfg: ContextConfig) -> nn.Module:
    loaded_rope = dict(original.config.rope_parameters or {})
    wanted = _rope_parameters(arch, cfg, loaded_rope)
    if _matches(loaded_rope, wanted):
        return original
    config = copy.deepcopy(original.config)  # the model's own config stays untouched
    config.rope_parameters = wanted
    config.max_position_embeddings = window(arch, cfg)
    rotary = type(original)(config=config)
    buffer = next(original.buffers(), None)
    return rotary.to(buffer.device) if buffer is not None else rotary


def _rotaries_for(loaded: LoadedModel, cfg: ContextConfig) -> list[nn.Module]:
    key = cfg.key()
    if key not in loaded.rotary_cache:
        loaded.rotary_cache[key] = [
            _build_rotary(slot.module, loaded.architecture, cfg) for slot in loaded.rotaries
        ]
    return loaded.rotary_cache[key]


@contextmanager
def apply_context(loaded: LoadedModel, cfg: ContextConfig) -> Iterator[None]:
    """Run the body with the configuration's rotary embedding; the module present before is put back after."""
    cfg.validate(loaded.architecture)
    replacements = _rotaries_for(loaded, cfg)
    saved = [slot.parent._modules[slot.name] for slot in loaded.rotaries]
    try:
        for slot, rotary in zip(loaded.rotaries, replacements, strict=True):
            # Direct _modules assignment: what nn.Module.__setattr__ ends up doing, without its checks.
            slot.parent._modules[slot.name] = rotary
        yield
    finally:
        for slot, rotary in zip(loaded.rotaries, saved, strict=True):
            slot.parent._modules[slot.name] = rotary
