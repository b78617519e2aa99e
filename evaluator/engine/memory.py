"""Memory planning: how many rows a batch may hold, from the KV cache it will need and the memory that is
free.

Pure arithmetic on numbers a caller reads from the model and the device, so it is tested without either. The
engine plans before it runs instead of only halving a batch after running out of memory (which it still does,
as a safety net).
"""

from __future__ import annotations

from typing import Any

# Left free for what the estimate misses (allocator fragmentation, library workspaces, the sampler's tensors).
HEADROOM = 0.1


def kv_bytes_per_token(config: Any, element_size: int) -> int:
    """Bytes the KV cache holds per token: keys and values of every layer's key-value heads."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element_size


def activation_bytes_per_token(config: Any, element_size: int, experts_per_token: int) -> int:
    """A generous bound on the live activations per prompt token in a prefill forward of one layer.

    The residual stream and attention projections (a few hidden-sized tensors) and, per routed slot, the
    gathered input, the gate-up output and the down output of the experts; the logits are computed for the
    last position only.
    """
    intermediate = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
    attention = (config.num_attention_heads + 2 * config.num_key_value_heads) * (
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )
    per_slot = 2 * config.hidden_size + 3 * intermediate
    # float32 copies for the routing softmax and sort indices per slot.
    routing = 4 * config.num_experts + 16 * experts_per_token if hasattr(config, "num_experts") else 0
    return element_size * (8 * config.hidden_size + 2 * attention + experts_per_token * per_slot) + routing


def plan_batch_size(
    *,
    requested: int,
    free_bytes: int,
    kv_bytes_per_token: int,
    tokens_per_row: int,
    prefill_tokens: int,
    activation_bytes_per_token: int,
    headroom: float = HEADROOM,
) -> int:
    """Most rows (at most requested, at least 1) whose KV cache and prefill activations fit in free_bytes.

    tokens_per_row: the prompt width plus the tokens to generate (what each row's cache grows to).
    prefill_tokens: prompt columns per prefill forward (a chunk, or the whole prompt).
    One row is always allowed: whether it fits is then the out-of-memory fallback's to find out.
    """
    if requested < 1:
        raise ValueError(f"requested must be at least 1, got {requested}")
    per_row = kv_bytes_per_token * tokens_per_row + activation_bytes_per_token * prefill_tokens
    usable = free_bytes * (1.0 - headroom)
    if per_row <= 0:
        return requested
    return max(1, min(requested, int(usable // per_row)))
