"""Tiny random MoE checkpoints (Qwen3-MoE, Qwen2-MoE) with a word-level tokenizer, saved like real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "philosophy asks what we can know and how we should live",
    "please send the report to the team before friday",
    "a mixture of experts routes every token to a few experts",
    "deeper routing may help reasoning and hurt routine mail",
    "one two three four five six seven eight nine ten",
]
SPECIAL = ["<pad>", "<eos>", "<unk>"]  # ids 0, 1, 2
VOCAB_SIZE = 96


def save_tokenizer(path: Path) -> None:
    """A word-level tokenizer trained on SENTENCES, saved as a PreTrainedTokenizerFast (left padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=SPECIAL))
    assert tokenizer.get_vocab_size() <= VOCAB_SIZE
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
    )
    fast.save_pretrained(path)


def tiny_config(family: str, **overrides: Any) -> Any:
    from transformers import Qwen2MoeConfig, Qwen3MoeConfig

    common: dict[str, Any] = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_experts": 16,
        "num_experts_per_tok": 4,
        "max_position_embeddings": 128,
        # Qwen3's theta, not the library default: a lost rope_theta would show.
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
        # Larger than the default 0.02 so that logits and router probabilities are well spread.
        "initializer_range": 0.2,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": None,
    }
    if family == "qwen3_moe":
        return Qwen3MoeConfig(**{**common, "head_dim": 16, "norm_topk_prob": True, **overrides})
    if family == "qwen2_moe":
        # Non-normalized top-k weights, a shared expert and one dense layer: the other code paths.
        return Qwen2MoeConfig(
            **{
                **common,
                "shared_expert_intermediate_size": 48,
                "norm_topk_prob": False,
                "mlp_only_layers": [0],
                **overrides,
            }
        )
    raise ValueError(family)


def save_checkpoint(path: Path, family: str, **overrides: Any) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **overrides))
    model.save_pretrained(path)
    save_tokenizer(path)
    return path


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Tiny matmuls gain nothing from threads, and OpenMP spin-waits badly when the cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def qwen3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("qwen3_moe"), "qwen3_moe")


@pytest.fixture(scope="session")
def qwen2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("qwen2_moe"), "qwen2_moe")


@pytest.fixture(scope="session")
def qwen3(qwen3_path: Path) -> Any:
    from evaluator.engine.loading import load_checkpoint

    return load_checkpoint(qwen3_path, device="cpu")


@pytest.fixture(scope="session")
def qwen2(qwen2_path: Path) -> Any:
    from evaluator.engine.loading import load_checkpoint

    return load_checkpoint(qwen2_path, device="cpu")


@pytest.fixture(params=["qwen3", "qwen2"])
def loaded(request: pytest.FixtureRequest) -> Any:
    """Each test using it runs on both families."""
    return request.getfixturevalue(request.param)


def logits(loaded: Any, text: str = "the quick brown fox jumps over the lazy dog") -> torch.Tensor:
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return loaded.model(ids).logits
