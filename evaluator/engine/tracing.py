"""Record which experts every real token used, per batch row, with forward hooks on the routers.

Everything accumulates in device tensors ([layers, rows, experts] counts, running sums) and comes to the host
once, when a summary is first asked for, so tracing adds no host synchronisation per decoding step. Only real
tokens count, not left padding (from the attention mask) nor what `generate` feeds a row after its
end-of-sequence token. A slot counts as active when its routing weight is non-zero (the dynamic policy zeroes
the slots it drops), so the counts say how many experts each token really used. Beside them, the slots the
experts computed: the active ones under the engine's experts implementation, every slot under the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

from .experts import skips_dropped_slots

if TYPE_CHECKING:
    from .loading import LoadedModel


class RoutingTrace:
    """Context manager hooking the routers of a LoadedModel for one batch (a `generate` call, or forwards).

    The batch size comes from the first forward. A forward pre-hook on the model reads `input_ids` and
    `attention_mask` to know, without a sync, which positions are real; in decoding steps (one position per
    row, after the prefill, which may come in several forwards), a row stops counting once an end-of-sequence
    token has been fed back into the model. `implementations` names the experts implementations that ran, per
    phase ("prefill", "decode").
    """

    def __init__(self, loaded: LoadedModel, *, eos_token_ids: Iterable[int] | None = None) -> None:
        self._loaded = loaded
        self._eos_ids = list(loaded.eos_token_ids if eos_token_ids is None else eos_token_ids)
        self._layer_of = {id(router): index for index, router in enumerate(loaded.routers)}
        self._handles: list[Any] = []
        self._rows = 0
        self._forwards = 0
        # Set per forward: which flattened positions (rows × positions, the routers' order) are real tokens.
        self._weights: torch.Tensor | None = None
        self._row_of: torch.Tensor | None = None
        # Allocated on the first forward, on the model's device.
        self._eos: torch.Tensor | None = None
        self._done: torch.Tensor | None = None
        self._tokens: torch.Tensor | None = None  # [rows] real tokens routed
        self._counts: torch.Tensor | None = None  # [layers, rows, experts] tokens that used each expert
        self._entropy: torch.Tensor | None = None  # [layers, rows] sum of routing entropy over real tokens
        self._computed: torch.Tensor | None = None  # [layers, rows] expert slots computed for real tokens
        self._decoding = False
        self.implementations: dict[str, set[str]] = {"prefill": set(), "decode": set()}
        self._host: tuple[torch.Tensor, ...] | None = None

    def __enter__(self) -> RoutingTrace:
        model = self._loaded.model
        # Hooks run eagerly under torch.compile (their Python state would otherwise recompile every step).
        before, after = (
            torch.compiler.disable(self._before_forward),
            torch.compiler.disable(self._after_router),
        )
        self._handles.append(model.register_forward_pre_hook(before, with_kwargs=True))
        self._handles.extend(router.register_forward_hook(after) for router in self._loaded.routers)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _allocate(self, rows: int, device: torch.device) -> None:
        layers, experts = len(self._loaded.routers), self._loaded.architecture.num_experts
        self._rows = rows
        # Built once: creating it per step would copy from the host, which waits for the device.
        self._eos = torch.tensor(self._eos_ids, dtype=torch.long, device=device)
        self._done = torch.zeros(rows, dtype=torch.bool, device=device)
        self._tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self._counts = torch.zeros(layers, rows, experts, dtype=torch.long, device=device)
        self._entropy = torch.zeros(layers, rows, dtype=torch.float32, device=device)
        self._computed = torch.zeros(layers, rows, dtype=torch.long, device=device)

    def _before_forward(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        shaped = input_ids if input_ids is not None else kwargs["inputs_embeds"]
        rows, length, device = shaped.shape[0], shaped.shape[1], shaped.device
        if self._counts is None:
            self._allocate(rows, device)
        elif rows != self._rows:
            raise ValueError(f"RoutingTrace follows one batch of {self._rows} rows; this forward has {rows}")
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            weights = mask[:, -length:].to(dtype=torch.long)
        else:  # no 2D mask: nothing tells padding apart, every position counts
            weights = torch.ones(rows, length, dtype=torch.long, device=device)
        self._decoding = self._forwards > 0 and length == 1
        if self._decoding and input_ids is not None and self._eos.numel():
            # Decoding: an end-of-sequence token fed back in ends the row; what follows is generate's filler.
            self._done |= torch.isin(input_ids, self._eos).any(-1)
        weights = weights * (~self._done).long()[:, None]
        self._tokens += weights.sum(-1)
        self._weights = weights.reshape(-1)
        self._row_of = torch.arange(rows, device=device).repeat_interleave(length)
        self._forwards += 1

    def _after_router(self, router: Any, inputs: tuple, outputs: tuple) -> None:
        if self._weights is None:
            raise RuntimeError(
                "RoutingTrace counts tokens from the model's forward: call the model, not a router"
            )
        logits, scores, indices = outputs[0], outputs[1], outputs[2]
        layer = self._layer_of[id(router)]
        implementation = str(getattr(self._loaded.model.config, "_experts_implementation", None) or "eager")
        self.implementations["decode" if self._decoding else "prefill"].add(implementation)
        active = (scores != 0).long() * self._weights[:, None]  # [tokens, slots]
        computed = (
            active.sum(-1) if skips_dropped_slots(implementation) else self._weights * indices.shape[-1]
        )
        self._computed[layer].index_add_(0, self._row_of, computed)
        slots = (
            self._row_of[:, None] * self._counts.shape[-1] + indices
        )  # position in this layer's [rows, experts]
        self._counts[layer].view(-1).scatter_add_(0, slots.reshape(-1), active.reshape(-1))
        entropy = torch.special.entr(torch.softmax(logits.float(), dim=-1)).sum(-1)
        self._entropy[layer].index_add_(0, self._row_of, entropy * self._weights)

    def _host_tensors(self) -> tuple[torch.Tensor, ...]:
        # The one device-to-host copy of the whole trace.
        if self._host is None:
            self._host = tuple(t.cpu() for t in (self._counts, self._tokens, self._entropy, self._computed))
        return self._host

    def summaries(self) -> list[dict[str, Any]]:
        """One JSON-able summary per batch row, in batch order."""
        return [self.summary(row) for row in range(self._rows)]

    def summary(self, row: int | None = None) -> dict[str, Any]:
        """The summary of one batch row, or of all rows together when row is None."""
        ran = {phase: sorted(names) for phase, names in self.implementations.items()}
        if self._counts is None:
            empty = torch.zeros(0)
            return _summary_dict(torch.zeros(0, 0, dtype=torch.long), 0, empty, empty) | {"experts_ran": ran}
        counts, tokens, entropy, computed = self._host_tensors()
        if row is None:
            summary = _summary_dict(counts.sum(1), int(tokens.sum()), entropy.sum(1), computed.sum(1))
        else:
            summary = _summary_dict(counts[:, row], int(tokens[row]), entropy[:, row], computed[:, row])
        # Which experts implementations ran, per phase: a decode on batched_mm would compute dropped slots.
        return summary | {"experts_ran": ran}


def _summary_dict(
    counts: torch.Tensor, tokens: int, entropy: torch.Tensor, computed: torch.Tensor
) -> dict[str, Any]:
    """counts: [layers, experts] host tensor; entropy and computed: [layers] sums over the tokens."""
    active = counts.sum(-1).tolist()  # expert uses per layer: the active experts summed over tokens
    layers = len(active)
    spent = int(computed.sum())
    return {
        "tokens": tokens,
        "layers": layers,
        "counts": counts.tolist(),
        "mean_active_experts": round(sum(active) / (tokens * layers), 4) if tokens and layers else 0.0,
        "mean_active_experts_per_layer": [round(a / tokens, 4) if tokens else 0.0 for a in active],
        "mean_entropy": round(float(entropy.sum()) / (tokens * layers), 4) if tokens and layers else 0.0,
        "compute_experts_per_token": round(spent / (tokens * layers), 4) if tokens and layers else 0.0,
    }
