"""The generated corpus, the untrained test model and the full build of the small trained MoE."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluator.corpus import CATEGORIES, generate_corpus
from evaluator.tiny import (
    BUILD_INFO_FILE,
    TINY_NUM_EXPERTS,
    TINY_TRAINED_TOP_K,
    build_tiny_moe,
    set_router_top_k,
    tiny_moe_exists,
    tiny_random_moe,
)

DEMO_PROMPTS = Path(__file__).resolve().parents[2] / "evaluator" / "demo_prompts.json"


def weights_digest(path: Path) -> str:
    tensors = load_file(path / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_the_corpus_is_the_same_for_a_seed_and_differs_between_seeds():
    assert generate_corpus(seed=3, n_docs=40) == generate_corpus(seed=3, n_docs=40)
    assert generate_corpus(seed=3, n_docs=40) != generate_corpus(seed=4, n_docs=40)


def test_the_corpus_covers_the_four_categories_evenly():
    corpus = generate_corpus(seed=0, n_docs=202)
    counts = {category: sum(1 for c, _ in corpus if c == category) for category in CATEGORIES}
    assert set(counts) == {"routine", "dialogue", "philosophy", "long_context"}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert all(text.strip() for _, text in corpus)


def test_the_corpus_has_the_shapes_each_category_promises():
    corpus = generate_corpus(seed=1, n_docs=400)
    by_category = {category: [text for c, text in corpus if c == category] for category in CATEGORIES}
    assert all("User: " in text and "\nAssistant: " in text for text in by_category["dialogue"])
    assert any(
        "Premise 1:" in text and "Conclusion: Therefore," in text for text in by_category["philosophy"]
    )
    assert any(text.startswith("Subject: ") for text in by_category["routine"])
    for text in by_category["long_context"]:
        question, answer = text.rsplit("\nAnswer: ", 1)
        assert "Question: " in question
        document = question.split("Question: ")[0]
        assert answer.lower() in document.lower()  # the answer was stated earlier in the document
    assert len({text for _, text in corpus}) > 0.9 * len(corpus)


def test_the_random_model_loads_with_from_pretrained_and_generates(tmp_path):
    path = tiny_random_moe(tmp_path, num_experts=8, top_k=2, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_experts == 8
    assert model.config.num_experts_per_tok == 2
    assert model.config.norm_topk_prob is True
    assert set_router_top_k(model, 1) == model.config.num_hidden_layers
    batch = tokenizer(["User: hello", "Subject: a longer first line"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)


def test_the_tokenizer_pads_on_the_left_and_starts_with_bos(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_random_moe(tmp_path))
    assert tokenizer.padding_side == "left"
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    batch = tokenizer(["a", "a much longer text"], padding=True)
    assert batch["input_ids"][0][0] == tokenizer.pad_token_id
    assert batch["input_ids"][1][0] == tokenizer.bos_token_id
    assert tokenizer.decode(batch["input_ids"][1], skip_special_tokens=True) == "a much longer text"


def test_the_random_model_is_the_same_for_a_seed(tmp_path):
    first = tiny_random_moe(tmp_path / "a", seed=5)
    second = tiny_random_moe(tmp_path / "b", seed=5)
    assert weights_digest(first) == weights_digest(second)


def test_the_demo_prompts_cover_each_category_with_a_dozen_tagged_prompts(tmp_path):
    prompts = json.loads(DEMO_PROMPTS.read_text())
    for category in CATEGORIES:
        mine = [p for p in prompts if p["category"] == category]
        assert len(mine) >= 12, category
        assert all(p["text"].strip() and p["tags"] for p in mine)
    assert {p["category"] for p in prompts} == set(CATEGORIES)
    # Trailing blanks tokenize differently from the same blanks followed by text.
    assert all(p["text"] == p["text"].rstrip() for p in prompts)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict, Path, dict]:
    """Two full builds with the same seed (about two minutes each, shared by the slow tests)."""
    root = tmp_path_factory.mktemp("tiny-moe")
    first, second = root / "first", root / "second"
    return (
        first,
        build_tiny_moe(first, log=lambda _m: None),
        second,
        build_tiny_moe(second, log=lambda _m: None),
    )


@pytest.mark.slow
def test_a_build_saves_a_complete_model_and_nothing_else(built):
    path, report, _, _ = built
    assert tiny_moe_exists(path)
    assert json.loads((path / BUILD_INFO_FILE).read_text()) == report
    assert report["path"] == str(path)
    assert report["trained_top_k"] == TINY_TRAINED_TOP_K
    assert report["num_experts"] == TINY_NUM_EXPERTS
    assert sorted(p.name for p in path.parent.iterdir()) == ["first", "second"]  # no leftover temp folders


@pytest.mark.slow
def test_the_same_seed_builds_the_same_weights(built):
    first, first_report, second, second_report = built
    assert weights_digest(first) == weights_digest(second)
    assert first_report["perplexity"] == second_report["perplexity"]


@pytest.mark.slow
def test_the_trained_depth_beats_depth_one(built):
    _, report, _, _ = built
    perplexity = report["perplexity"]
    assert perplexity[str(TINY_TRAINED_TOP_K)] < 0.9 * perplexity["1"]
    assert perplexity[str(2 * TINY_TRAINED_TOP_K)] < perplexity["1"]


@pytest.mark.slow
def test_the_long_demo_prompts_fit_and_the_trained_model_continues_every_category(built):
    path, _, _, _ = built
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_experts_per_tok == TINY_TRAINED_TOP_K
    prompts = json.loads(DEMO_PROMPTS.read_text())
    lengths = {p["category"]: [] for p in prompts}
    for p in prompts:
        lengths[p["category"]].append(len(tokenizer(p["text"])["input_ids"]))
    assert max(lengths["long_context"]) <= 700
    assert max(n for category, ns in lengths.items() if category != "long_context" for n in ns) <= 200
    batch = tokenizer(["User: What is the capital of France?\nAssistant:"], return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
