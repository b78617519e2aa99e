"""Memory planning: batch sizes from the KV cache per token and the free memory."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from evaluator.engine.bench import qwen3_30b_a3b_config
from evaluator.engine.memory import activation_bytes_per_token, kv_bytes_per_token, plan_batch_size

GIB = 1 << 30


def test_qwen3_30b_a3b_holds_96_kib_of_kv_cache_per_token_in_bf16() -> None:
    # 48 layers × 4 key-value heads × 128 dims × (key + value) × 2 bytes.
    assert kv_bytes_per_token(qwen3_30b_a3b_config(), 2) == 98_304


def test_head_dim_defaults_to_hidden_over_heads() -> None:
    config = SimpleNamespace(
        num_hidden_layers=2, num_key_value_heads=2, hidden_size=64, num_attention_heads=4
    )
    assert kv_bytes_per_token(config, 4) == 2 * 2 * 2 * 16 * 4


def _plan(**overrides: int) -> int:
    arguments = {
        "requested": 32,
        "free_bytes": 80 * GIB,
        "kv_bytes_per_token": 98_304,
        "tokens_per_row": 4096,
        "prefill_tokens": 4096,
        "activation_bytes_per_token": 0,
    }
    return plan_batch_size(**{**arguments, **overrides})


def test_short_rows_get_the_batch_asked_for() -> None:
    assert _plan() == 32


def test_long_rows_get_as_many_as_their_cache_leaves_room_for() -> None:
    # 131,072 tokens × 96 KiB = 12 GiB a row; 90% of 80 GiB holds 6 of them.
    assert _plan(tokens_per_row=131_072) == 6


def test_prefill_activations_count_against_the_room() -> None:
    without = _plan(tokens_per_row=131_072)
    with_activations = _plan(tokens_per_row=131_072, prefill_tokens=8192, activation_bytes_per_token=1 << 20)
    assert with_activations < without


def test_one_row_is_always_tried() -> None:
    assert _plan(free_bytes=GIB, tokens_per_row=131_072) == 1


def test_a_batch_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="requested must be at least 1"):
        _plan(requested=0)


def test_activations_grow_with_the_experts_per_token() -> None:
    config = qwen3_30b_a3b_config()
    assert activation_bytes_per_token(config, 2, 16) > activation_bytes_per_token(config, 2, 8) > 0
