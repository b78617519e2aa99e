"""The engine's experts implementation: grouped matmuls in prefill and decode alike, dropped slots skipped.

It is transformers' own "grouped_mm" forward registered under the project's name, for two reasons. `generate`
swaps every "grouped_mm" for "batched_mm" while decoding on an accelerator (which fetches and multiplies a
whole expert for every (token, slot)); a name of our own is left alone. And a slot whose routing weight is 0
(what the dynamic depth policy gives the slots it drops) is sent to a sentinel group past the last expert,
which the grouped matmul never computes: a dynamic arm pays for the experts it keeps, not for k_max. With
every slot weighted it runs exactly the operations of "grouped_mm", so logits are bit-identical to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

NAME = "depth_arena_grouped_mm"
# Implementations ours replaces when a model is wrapped: the stock grouped one and transformers' default.
_REPLACED = {"grouped_mm", None}


def grouped_experts_forward(
    self: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
) -> torch.Tensor:
    """transformers' grouped_mm experts forward, with zero-weight slots routed to a group never computed."""
    import torch
    from transformers.integrations.moe import _grouped_linear, grouped_mm_experts_forward

    if getattr(self, "_is_expert_parallel", False):  # expert parallelism uses the sentinel group itself
        return grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)
    device = hidden_states.device
    num_top_k = top_k_index.size(-1)
    num_tokens, hidden_dim = hidden_states.size(0), hidden_states.size(-1)
    sample_weights = top_k_weights.reshape(-1)
    # Sentinel id num_experts: sorted to the tail, dropped by histc, past the last offset: never multiplied.
    expert_ids = torch.where(sample_weights != 0, top_k_index.reshape(-1), self.num_experts)

    expert_ids_g, perm = torch.sort(expert_ids)
    selected_hidden_states_g = hidden_states[perm // num_top_k]
    sample_weights_g = sample_weights[perm]
    # histc rather than bincount: no host sync, so the step stays capturable in a CUDA graph.
    histc_input = expert_ids_g.float() if device.type in ("cpu", "mps") else expert_ids_g.int()
    tokens_per_expert = torch.histc(histc_input, bins=self.num_experts, min=0, max=self.num_experts - 1)
    offsets = torch.cumsum(tokens_per_expert, dim=0, dtype=torch.int32)
    computed = (expert_ids_g < self.num_experts).unsqueeze(-1)
    expert_ids_g = expert_ids_g.clamp(max=self.num_experts - 1)  # keeps per-row bias gathers in bounds

    if self.has_gate:
        weights, biases = self.gate_up_proj, self.gate_up_proj_bias if self.has_bias else None
    else:
        weights, biases = self.up_proj, self.up_proj_bias if self.has_bias else None
    proj_out = _grouped_linear(
        selected_hidden_states_g,
        weights,
        offsets,
        bias=biases[expert_ids_g] if biases is not None else None,
        is_transposed=self.is_transposed,
    )
    proj_out = self._apply_gate(proj_out) if self.has_gate else self.act_fn(proj_out)
    biases = self.down_proj_bias[expert_ids_g] if self.has_bias else None
    proj_out = _grouped_linear(
        proj_out, self.down_proj, offsets, bias=biases, is_transposed=self.is_transposed
    )
    if self.has_post_expert_norm:
        proj_out = self.post_expert_norm(proj_out)

    # The kernel leaves rows past the last offset uninitialised: zero them, not multiply (NaN * 0 is NaN).
    weighted_out = (proj_out * sample_weights_g.unsqueeze(-1)).masked_fill(~computed, 0.0)
    inv_perm = torch.empty_like(perm)
    inv_perm[perm] = torch.arange(perm.size(0), device=device)
    weighted_out = weighted_out[inv_perm]
    final_hidden_states = weighted_out.view(num_tokens, num_top_k, hidden_dim).sum(dim=1)
    return final_hidden_states.to(hidden_states.dtype)


def register() -> None:
    """Make NAME a valid `experts_implementation` (idempotent; the registry is process-wide)."""
    from transformers.integrations.moe import ExpertsInterface

    ExpertsInterface.register(NAME, grouped_experts_forward)


def use_grouped_experts(model: Any) -> str:
    """Switch a model on the stock grouped implementation to ours; return the implementation now in effect."""
    current = getattr(model.config, "_experts_implementation", None)
    if current in _REPLACED and hasattr(model, "set_experts_implementation"):
        register()
        model.set_experts_implementation(NAME)
        current = NAME
    return str(current or "eager")


def skips_dropped_slots(implementation: str | None) -> bool:
    """Whether zero-weight slots cost nothing under this implementation (the others compute every slot)."""
    return implementation == NAME
