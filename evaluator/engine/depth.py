"""Expert-depth policies (how many experts each token uses), applied to a loaded model without reloading.

A policy is a small frozen value stored as JSON on an arm. `apply_depth` sets `top_k` on every router module
(in transformers 5 the router reads it at forward time; `config.num_experts_per_tok` is only read at
construction) or, for the dynamic policy, wraps each router's forward, and restores the exact previous state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .loading import LoadedModel

KINDS = ("fixed", "by_category", "by_tag", "dynamic", "auto")
_FIELDS = {
    "fixed": {"kind", "k"},
    "by_category": {"kind", "mapping", "default"},
    "by_tag": {"kind", "mapping", "default"},
    "dynamic": {"kind", "p", "k_min", "k_max"},
    # auto: a router (engine/router.py) predicts the category of an unlabelled prompt, the mapping gives k.
    "auto": {"kind", "mapping", "default", "router"},
}


def normalize_label(label: str) -> str:
    """Categories and tags match case-insensitively and ignoring surrounding spaces."""
    return label.strip().casefold()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DepthPolicy:
    """fixed(k), by_category/by_tag (label → k with a default), or dynamic(p, k_min, k_max)."""

    kind: str
    k: int | None = None
    mapping: tuple[tuple[str, int], ...] = ()
    default: int | None = None
    p: float | None = None
    k_min: int | None = None
    k_max: int | None = None
    router: Any = None  # auto only: a router.CategoryRouter

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown depth policy kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.kind == "fixed" and not _is_int(self.k):
            raise ValueError("A fixed depth policy needs an integer k (experts per token), e.g. {'k': 8}")
        if self.kind == "auto" and not _is_router(self.router):
            raise ValueError("An auto depth policy needs a fitted router (manage.py recommend_policy --auto)")
        if self.kind in ("by_category", "by_tag", "auto"):
            if not _is_int(self.default):
                raise ValueError(
                    f"A {self.kind} policy needs an integer default k for labels not in its mapping"
                )
            for label, k in self.mapping:
                if not isinstance(label, str) or not normalize_label(label) or not _is_int(k):
                    raise ValueError(
                        f"{self.kind} mapping entries must be non-empty label → integer k, got {label!r}"
                    )
        if self.kind == "dynamic" and not (
            isinstance(self.p, int | float) and _is_int(self.k_min) and _is_int(self.k_max)
        ):
            raise ValueError(
                "A dynamic policy needs p (probability mass, e.g. 0.9) and integer k_min and k_max"
            )

    @classmethod
    def fixed(cls, k: int) -> DepthPolicy:
        return cls("fixed", k=k)

    @classmethod
    def by_category(cls, mapping: Mapping[str, int], default: int) -> DepthPolicy:
        return cls("by_category", mapping=_mapping(mapping), default=default)

    @classmethod
    def by_tag(cls, mapping: Mapping[str, int], default: int) -> DepthPolicy:
        return cls("by_tag", mapping=_mapping(mapping), default=default)

    @classmethod
    def dynamic(cls, p: float, k_min: int, k_max: int) -> DepthPolicy:
        return cls("dynamic", p=float(p), k_min=k_min, k_max=k_max)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DepthPolicy:
        if not isinstance(data, Mapping):
            raise ValueError(f"A depth policy is a JSON object with a 'kind', got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"Unknown depth policy kind {kind!r}: use one of {', '.join(KINDS)}")
        unknown = set(data) - _FIELDS[kind]
        missing = _FIELDS[kind] - set(data)
        if unknown or missing:
            raise ValueError(
                f"A {kind} depth policy takes exactly {sorted(_FIELDS[kind])}"
                + (f"; unknown: {sorted(unknown)}" if unknown else "")
                + (f"; missing: {sorted(missing)}" if missing else "")
            )
        if kind == "fixed":
            return cls.fixed(data["k"])
        if kind == "dynamic":
            if not isinstance(data["p"], int | float) or isinstance(data["p"], bool):
                raise ValueError(f"dynamic p must be a number in (0, 1], got {data['p']!r}")
            return cls.dynamic(data["p"], data["k_min"], data["k_max"])
        if not isinstance(data["mapping"], Mapping):
            raise ValueError(f"{kind} mapping must be an object of label → k, got {data['mapping']!r}")
        if kind == "auto":
            from .router import CategoryRouter

            router = CategoryRouter.from_dict(data["router"])
            return cls(kind, mapping=_mapping(data["mapping"]), default=data["default"], router=router)
        return cls(kind, mapping=_mapping(data["mapping"]), default=data["default"])

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "fixed":
            return {"kind": "fixed", "k": self.k}
        if self.kind == "dynamic":
            return {"kind": "dynamic", "p": self.p, "k_min": self.k_min, "k_max": self.k_max}
        if self.kind == "auto":
            return {
                "kind": "auto",
                "mapping": dict(self.mapping),
                "default": self.default,
                "router": self.router.to_dict(),
            }
        return {"kind": self.kind, "mapping": dict(self.mapping), "default": self.default}

    def validate(self, num_experts: int) -> None:
        """Raise ValueError saying what to change if the policy cannot run with num_experts experts."""

        def check(k: int | None, what: str) -> None:
            if not _is_int(k) or not 1 <= k <= num_experts:
                raise ValueError(
                    f"{what} is {k}, but it must be between 1 and {num_experts} (the model's experts)"
                )

        if self.kind == "fixed":
            check(self.k, "k")
        elif self.kind == "dynamic":
            if not 0.0 < float(self.p) <= 1.0:  # type: ignore[arg-type]
                raise ValueError(
                    f"p is {self.p}, but it must be in (0, 1]: the router probability mass to cover"
                )
            check(self.k_min, "k_min")
            check(self.k_max, "k_max")
            if self.k_min > self.k_max:  # type: ignore[operator]
                raise ValueError(f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        else:
            check(self.default, "default k")
            for label, k in self.mapping:
                check(k, f"k for {label!r}")

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed k={self.k}"
        if self.kind == "dynamic":
            return f"dynamic p={self.p:g}, k {self.k_min}..{self.k_max}"
        entries = ", ".join(f"{label}→{k}" for label, k in self.mapping)
        prefix = {"by_tag": "by tag", "auto": "auto (predicted category)"}.get(self.kind, "by category")
        return (
            f"{prefix}: {entries}, default {self.default}" if entries else f"{prefix}: default {self.default}"
        )

    def k_for(self, category: str = "", tags: list[str] | tuple[str, ...] = ()) -> int | None:
        """The fixed k a prompt gets under this policy (None for dynamic: decided per token and layer)."""
        if self.kind == "fixed":
            return self.k
        if self.kind == "dynamic":
            return None
        if self.kind == "auto":
            # The prompt's own label must not leak in: its category is predicted from its text first.
            raise ValueError("An auto policy decides from the prompt text: resolve it with auto_requests()")
        mapping = dict(self.mapping)
        if self.kind == "by_category":
            return mapping.get(normalize_label(category), self.default)
        matches = [mapping[label] for label in map(normalize_label, tags) if label in mapping]
        # Several matching tags: the deepest wins, so a "reasoning" tag is never diluted by a "short" one.
        return max(matches) if matches else self.default


def _is_router(value: Any) -> bool:
    from .router import CategoryRouter

    return isinstance(value, CategoryRouter)


def _mapping(mapping: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    entries: dict[str, int] = {}
    for label, k in mapping.items():
        if not isinstance(label, str):
            raise ValueError(f"Mapping labels must be strings, got {label!r}")
        key = normalize_label(label)
        if key in entries:
            raise ValueError(f"Label {label!r} appears twice in the mapping (labels ignore case and spaces)")
        entries[key] = k
    return tuple(entries.items())


def _dynamic_forward(inner: Callable, p: float, k_min: int, normalize: bool) -> Callable:
    """Router forward keeping, per token, the fewest top-k_max experts whose probability mass reaches p."""
    import torch

    def forward(hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, scores, indices = inner(hidden_states)  # the router runs at top_k = k_max
        # The router's own softmax (float32) at the chosen experts, which come sorted by probability.
        probs = torch.softmax(logits.float(), dim=-1).gather(-1, indices)
        keep = (probs.cumsum(-1) - probs) < p  # keep a slot while the mass before it is still short of p
        keep[..., :k_min] = True
        weights = probs * keep
        if normalize:
            weights = weights / weights.sum(-1, keepdim=True)
        # Dropped slots point at the token's first expert with weight 0 instead of a sentinel index: every
        # experts implementation (eager, grouped_mm, batched_mm; transformers 5.17 and later) accepts it, and
        # with eager and grouped_mm it reads no extra expert weights.
        indices = torch.where(keep, indices, indices[..., :1])
        return logits, weights.to(scores.dtype), indices

    return forward


_NO_OVERRIDE = object()


@contextmanager
def apply_depth(
    loaded: LoadedModel, *, k: int | None = None, dynamic: DepthPolicy | None = None
) -> Iterator[None]:
    """Run the body with k experts per token (or a dynamic policy) on every router, then restore exactly."""
    num_experts = loaded.architecture.num_experts
    if k is not None and dynamic is not None:
        raise ValueError("Give either k or a dynamic policy, not both")
    if k is not None:
        DepthPolicy.fixed(k).validate(num_experts)
    if dynamic is not None:
        if dynamic.kind != "dynamic":
            raise ValueError(
                f"dynamic= takes a dynamic policy, got {dynamic.describe()}: resolve k with k_for()"
            )
        dynamic.validate(num_experts)
    # object.__setattr__ / __dict__ skip nn.Module's slow attribute hooks: these are plain attributes, and the
    # switch stays in microseconds.
    saved = [
        (router, router.top_k, router.__dict__.get("forward", _NO_OVERRIDE)) for router in loaded.routers
    ]
    try:
        for router in loaded.routers:
            if k is not None:
                object.__setattr__(router, "top_k", k)
            elif dynamic is not None:
                inner = router.forward
                object.__setattr__(router, "top_k", dynamic.k_max)
                # Mixtral's router always renormalizes and has no norm_topk_prob attribute.
                normalize = bool(getattr(router, "norm_topk_prob", True))
                router.__dict__["forward"] = _dynamic_forward(
                    inner, float(dynamic.p), dynamic.k_min, normalize
                )
        yield
    finally:
        for router, top_k, forward in saved:
            object.__setattr__(router, "top_k", top_k)
            if forward is _NO_OVERRIDE:
                router.__dict__.pop("forward", None)
            else:
                router.__dict__["forward"] = forward
