"""Checkpoint inspection and refusals, loading, and the per-process cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from evaluator.engine.loading import (
    Architecture,
    CheckpointError,
    forget_loaded,
    get_loaded,
    inspect_checkpoint,
    load_checkpoint,
)


def _copy_with_config(source: Path, target: Path, **changes: object) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_inspect_reads_the_architecture_of_both_families(qwen3_path: Path, qwen2_path: Path) -> None:
    qwen3 = inspect_checkpoint(qwen3_path)
    assert qwen3 == Architecture(
        family="qwen3_moe",
        num_layers=3,
        num_moe_layers=3,
        num_experts=16,
        default_top_k=4,
        native_context=128,
        max_position_embeddings=128,
        hidden_size=64,
        vocab_size=96,
        rope_theta=1_000_000.0,
        rope_type="default",
    )
    assert json.loads(json.dumps(qwen3.to_dict()))["num_experts"] == 16
    qwen2 = inspect_checkpoint(qwen2_path)
    assert (qwen2.family, qwen2.num_layers, qwen2.num_moe_layers) == ("qwen2_moe", 3, 2)  # layer 0 is dense


def test_inspect_reads_the_original_window_of_a_yarn_checkpoint(qwen3_path: Path, tmp_path: Path) -> None:
    # The layout of Qwen3-30B-A3B's own config.json: rope_theta at the top, YaRN in rope_scaling.
    folder = tmp_path / "yarn"
    folder.mkdir()
    config = json.loads((qwen3_path / "config.json").read_text())
    del config["rope_parameters"]
    config.update(
        rope_theta=1_000_000.0,
        max_position_embeddings=131_072,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32_768},
    )
    (folder / "config.json").write_text(json.dumps(config))
    architecture = inspect_checkpoint(folder)
    assert architecture.native_context == 32_768
    assert architecture.max_position_embeddings == 131_072
    assert architecture.rope_theta == 1_000_000.0
    assert architecture.rope_type == "yarn"


def test_refuses_a_missing_folder_and_a_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        inspect_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"No config\.json"):
        inspect_checkpoint(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        inspect_checkpoint(tmp_path / "file")


def test_refuses_a_dense_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "llama", "num_hidden_layers": 2, "max_position_embeddings": 4096})
    )
    with pytest.raises(CheckpointError, match="not a Mixture-of-Experts model"):
        inspect_checkpoint(tmp_path)


def test_refuses_an_unsupported_moe_family(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "deepseek_v3", "n_routed_experts": 256, "num_experts_per_tok": 8})
    )
    with pytest.raises(
        CheckpointError, match="not supported; supported: mixtral, olmoe, qwen2_moe, qwen3_moe"
    ):
        inspect_checkpoint(tmp_path)


def test_refuses_quantized_checkpoints(qwen3_path: Path, tmp_path: Path) -> None:
    gptq = _copy_with_config(
        qwen3_path, tmp_path / "gptq", quantization_config={"quant_method": "gptq", "bits": 4}
    )
    with pytest.raises(
        CheckpointError, match=r"Quantized checkpoint refused \(gptq.*unquantized.*bf16, fp16"
    ):
        inspect_checkpoint(gptq)
    with pytest.raises(CheckpointError, match="Quantized"):
        load_checkpoint(gptq, device="cpu")

    fp8 = _copy_with_config(qwen3_path, tmp_path / "fp8", dtype="float8_e4m3fn")
    with pytest.raises(CheckpointError, match=r"float8_e4m3fn according to config\.json"):
        inspect_checkpoint(fp8)


def test_refuses_int8_weights_found_in_the_safetensors_header(qwen3_path: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "int8"
    shutil.copytree(qwen3_path, folder)
    save_file(
        {"model.layers.0.mlp.experts.qweight": torch.zeros(4, 4, dtype=torch.int8)},
        folder / "extra.safetensors",
    )
    with pytest.raises(CheckpointError, match="I8 weights"):
        inspect_checkpoint(folder)


def test_a_folder_without_weights_is_refused_with_the_reason(qwen3_path: Path, tmp_path: Path) -> None:
    shutil.copy(qwen3_path / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="Could not load"):
        load_checkpoint(tmp_path, device="cpu")


def test_load_finds_routers_rotary_and_sets_left_padding(qwen3, qwen2) -> None:
    assert len(qwen3.routers) == 3 and all(router.top_k == 4 for router in qwen3.routers)
    assert len(qwen2.routers) == 2  # one dense layer has no router
    assert [slot.name for slot in qwen3.rotaries] == ["rotary_emb"]
    assert qwen3.tokenizer.padding_side == "left" and qwen3.tokenizer.pad_token_id == 0
    assert qwen3.eos_token_ids == (1,)
    assert qwen3.dtype == torch.float32 and qwen3.device.type == "cpu"
    assert qwen3.load_seconds > 0
    assert qwen3.experts_implementation == "depth_arena_grouped_mm"  # grouped, kept while decoding


def test_load_in_bf16_and_reject_unknown_dtypes(qwen3_path: Path) -> None:
    loaded = load_checkpoint(qwen3_path, dtype="bf16", device="cpu")
    assert loaded.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())
    with pytest.raises(ValueError, match="dtype must be one of auto, bf16, fp16, fp32"):
        load_checkpoint(qwen3_path, dtype="int8", device="cpu")


def test_get_loaded_loads_once_per_path_dtype_and_device(qwen3_path: Path) -> None:
    forget_loaded()
    try:
        first = get_loaded(qwen3_path, device="cpu")
        assert get_loaded(str(qwen3_path) + "/", device="cpu") is first
        assert get_loaded(qwen3_path, dtype="fp32", device="cpu") is first  # "auto" is fp32 on the CPU
        assert get_loaded(qwen3_path, dtype="bf16", device="cpu") is not first
    finally:
        forget_loaded()
