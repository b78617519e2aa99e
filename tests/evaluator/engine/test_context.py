"""Context configurations: JSON, limits, and swapping the rotary embedding for YaRN without reloading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evaluator.engine.context import ContextConfig, apply_context, input_limit, window
from evaluator.engine.loading import Architecture, load_checkpoint

from .conftest import logits, save_checkpoint

QWEN3_30B = Architecture(
    family="qwen3_moe",
    num_layers=48,
    num_moe_layers=48,
    num_experts=128,
    default_top_k=8,
    native_context=32_768,
    max_position_embeddings=32_768,
    hidden_size=2048,
    vocab_size=151_936,
    rope_theta=1_000_000.0,
)


@pytest.mark.parametrize(
    ("config", "description"),
    [
        (ContextConfig.native(), "native context"),
        (ContextConfig.yarn(4), "YaRN ×4"),
        (ContextConfig.yarn(2, input_budget=8000), "YaRN ×2, input ≤ 8,000 tokens"),
    ],
)
def test_round_trips_through_json(config: ContextConfig, description: str) -> None:
    assert ContextConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.describe() == description
    config.validate(QWEN3_30B)


def test_window_and_input_limit_of_the_reference_model() -> None:
    assert window(QWEN3_30B, ContextConfig.native()) == 32_768
    assert window(QWEN3_30B, ContextConfig.yarn(4)) == 131_072
    assert input_limit(QWEN3_30B, ContextConfig.native(), 512) == 32_768 - 512
    assert input_limit(QWEN3_30B, ContextConfig.yarn(4, input_budget=100_000), 512) == 100_000
    assert input_limit(QWEN3_30B, ContextConfig.native(input_budget=32_700), 512) == 32_768 - 512


def test_validation_says_what_to_change() -> None:
    with pytest.raises(ValueError, match="use kind 'yarn'"):
        ContextConfig("native", 2.0).validate(QWEN3_30B)
    with pytest.raises(ValueError, match="factor above 1"):
        ContextConfig.yarn(1).validate(QWEN3_30B)
    with pytest.raises(ValueError, match="use at most 64"):
        ContextConfig.yarn(1e308).validate(QWEN3_30B)
    with pytest.raises(ValueError, match="between 1 and 32767 tokens"):
        ContextConfig.native(input_budget=40_000).validate(QWEN3_30B)
    with pytest.raises(ValueError, match="Unknown context kind 'rope'"):
        ContextConfig.from_dict({"kind": "rope"})
    with pytest.raises(ValueError, match="Unknown context configuration keys"):
        ContextConfig.from_dict({"kind": "yarn", "factor": 4, "scaling": 2})


def test_yarn_changes_logits_and_native_comes_back_bit_for_bit(loaded) -> None:
    original = loaded.rotaries[0].module
    before = logits(loaded)
    with apply_context(loaded, ContextConfig.yarn(4)):
        swapped = loaded.model.model.rotary_emb
        assert swapped is not original
        extended = logits(loaded)
    assert loaded.model.model.rotary_emb is original
    assert not torch.equal(before, extended)
    assert torch.equal(before, logits(loaded))
    with apply_context(loaded, ContextConfig.native()):  # the checkpoint's own rotary: nothing swapped
        assert loaded.model.model.rotary_emb is original


def test_yarn_keeps_rope_theta_and_leaves_the_model_config_alone(qwen3) -> None:
    original = qwen3.rotaries[0].module
    with apply_context(qwen3, ContextConfig.yarn(4)):
        yarn = qwen3.model.model.rotary_emb
    assert yarn.config.rope_parameters == {
        "rope_type": "yarn",
        "rope_theta": 1_000_000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 128,
    }
    assert qwen3.model.config.rope_parameters["rope_type"] == "default"
    # YaRN keeps the fastest rotations (which depend on theta) and slows the slowest ones by the factor.
    torch.testing.assert_close(yarn.inv_freq[0], original.inv_freq[0])
    torch.testing.assert_close(yarn.inv_freq[-1], original.inv_freq[-1] / 4)
    assert yarn.attention_scaling > 1.0


def test_built_rotary_modules_are_cached(qwen3) -> None:
    with apply_context(qwen3, ContextConfig.yarn(3)):
        first = qwen3.model.model.rotary_emb
    with apply_context(
        qwen3, ContextConfig.yarn(3, input_budget=50)
    ):  # the budget does not change the module
        assert qwen3.model.model.rotary_emb is first


def test_a_yarn_checkpoint_can_run_native(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "yarn",
        "qwen3_moe",
        max_position_embeddings=256,
        rope_parameters={
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 64,
            "rope_theta": 1_000_000.0,
        },
    )
    loaded = load_checkpoint(path, device="cpu")
    assert loaded.architecture.native_context == 64
    original = loaded.model.model.rotary_emb
    with apply_context(loaded, ContextConfig.yarn(4)):
        assert loaded.model.model.rotary_emb is original
        extended = logits(loaded)
    with apply_context(loaded, ContextConfig.native()):
        assert loaded.model.model.rotary_emb.rope_type == "default"
        native = logits(loaded)
    assert not torch.equal(native, extended)
    assert torch.equal(logits(loaded), extended)
