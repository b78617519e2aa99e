"""The engine's experts implementation: transformers' grouped logits bit for bit, kept while decoding."""

from __future__ import annotations

import pytest
import torch

from evaluator.engine.depth import DepthPolicy, apply_depth
from evaluator.engine.experts import NAME

from .conftest import logits


@pytest.fixture
def on_implementation(loaded):
    """Run a body under another experts implementation, then put the engine's back."""
    previous = loaded.experts_implementation

    def switch(implementation: str) -> None:
        loaded.model.set_experts_implementation(implementation)

    yield switch
    loaded.model.set_experts_implementation(previous)


def test_a_loaded_model_runs_the_engine_experts(loaded) -> None:
    assert loaded.experts_implementation == NAME


@pytest.mark.parametrize("k", [1, 4, 16])
def test_logits_equal_transformers_grouped_mm_bit_for_bit(loaded, on_implementation, k: int) -> None:
    with apply_depth(loaded, k=k):
        ours = logits(loaded)
        on_implementation("grouped_mm")
        assert torch.equal(logits(loaded), ours)


def test_dynamic_depth_gives_the_logits_of_computing_every_slot(loaded, on_implementation) -> None:
    # The engine skips dropped slots; eager multiplies them by weight 0. The sums differ only in rounding.
    with apply_depth(loaded, dynamic=DepthPolicy.dynamic(0.6, 1, 8)):
        skipped = logits(loaded)
        on_implementation("eager")
        computed = logits(loaded)
    assert torch.isfinite(skipped).all()
    torch.testing.assert_close(skipped, computed, rtol=1e-4, atol=1e-4)


def test_generate_keeps_the_engine_experts_while_decoding(qwen3) -> None:
    seen: set[str] = set()
    experts = next(m for m in qwen3.model.modules() if type(m).__name__.endswith("Experts"))
    handle = experts.register_forward_pre_hook(
        lambda module, args: seen.add(module.config._experts_implementation)
    )
    try:
        encoded = qwen3.tokenizer("the quick brown fox", return_tensors="pt")
        qwen3.model.generate(**encoded, max_new_tokens=3, do_sample=False, pad_token_id=0)
    finally:
        handle.remove()
    assert seen == {NAME}
