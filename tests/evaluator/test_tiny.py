"""The generated corpus, the untrained test model and the full build of the small trained MoE."""

import hashlib
import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluator import tiny
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


def test_the_whole_build_path_is_deterministic_and_replaces_a_folder_atomically(tmp_path, monkeypatch):
    # A cut-down corpus runs the same code as the full build in a few seconds.
    monkeypatch.setattr(tiny, "TRAIN_DOCS", 48)
    monkeypatch.setattr(tiny, "VAL_DOCS", 8)
    first, second = tmp_path / "first", tmp_path / "second"
    report = build_tiny_moe(first, seed=7, log=lambda _m: None)
    assert build_tiny_moe(second, seed=7, log=lambda _m: None)["perplexity"] == report["perplexity"]
    assert weights_digest(first) == weights_digest(second)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    assert json.loads((first / BUILD_INFO_FILE).read_text()) == report
    assert set(report) >= {"path", "seconds", "train_tokens", "perplexity", "trained_top_k", "num_experts"}

    build_tiny_moe(second, seed=8, log=lambda _m: None)
    assert weights_digest(first) != weights_digest(second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"]  # no temporary folders left


def test_a_failed_build_leaves_no_folder_behind(tmp_path, monkeypatch):
    def fail(*_args, **_kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tiny, "TRAIN_DOCS", 16)
    monkeypatch.setattr(tiny, "_train", fail)
    with pytest.raises(RuntimeError):
        build_tiny_moe(tmp_path / "model", log=lambda _m: None)
    assert list(tmp_path.iterdir()) == []


def test_the_command_keeps_an_existing_model_unless_forced(tmp_path):
    path = tiny_random_moe(tmp_path)
    before = weights_digest(path)
    out = io.StringIO()
    call_command("build_tiny_moe", out=str(path), stdout=out)
    assert "already holds a model" in out.getvalue()
    assert weights_digest(path) == before


def test_a_folder_of_other_files_is_never_replaced(tmp_path, monkeypatch):
    def train(*_args, **_kwargs):
        raise AssertionError("the refusal comes before any work")

    monkeypatch.setattr(tiny, "_train", train)
    checkpoint = tmp_path / "Qwen3-30B-A3B-Base"
    checkpoint.mkdir()
    (checkpoint / "model-00001-of-00016.safetensors").write_bytes(b"weights")
    with pytest.raises(CommandError, match="refusing to replace it"):
        call_command("build_tiny_moe", out=str(checkpoint), force=True, stdout=io.StringIO())
    assert [p.name for p in checkpoint.iterdir()] == ["model-00001-of-00016.safetensors"]
    with pytest.raises(FileExistsError, match="is a file"):
        build_tiny_moe(checkpoint / "model-00001-of-00016.safetensors", log=lambda _m: None)


def test_the_command_reports_a_failed_build_as_an_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CommandError, match="failed"):
        call_command("build_tiny_moe", out=str(tmp_path / "file" / "model"), stdout=io.StringIO())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    """One full build (about two minutes), shared by the slow tests."""
    path = tmp_path_factory.mktemp("tiny-moe") / "model"
    return path, build_tiny_moe(path, log=lambda _m: None)


@pytest.mark.slow
def test_a_full_build_saves_a_complete_model_that_reports_itself(built):
    path, report = built
    assert tiny_moe_exists(path)
    assert json.loads((path / BUILD_INFO_FILE).read_text()) == report
    assert report["path"] == str(path)
    assert report["trained_top_k"] == TINY_TRAINED_TOP_K
    assert report["num_experts"] == TINY_NUM_EXPERTS
    assert report["train_tokens"] > 100_000


@pytest.mark.slow
def test_a_second_full_build_with_the_same_seed_has_the_same_weights(built, tmp_path):
    path, report = built
    again = build_tiny_moe(tmp_path / "again", log=lambda _m: None)
    assert weights_digest(tmp_path / "again") == weights_digest(path)
    assert again["perplexity"] == report["perplexity"]


@pytest.mark.slow
def test_the_trained_depth_clearly_beats_depth_one(built):
    _, report = built
    perplexity = report["perplexity"]
    assert perplexity[str(TINY_TRAINED_TOP_K)] < 0.9 * perplexity["1"]
    assert perplexity[str(2 * TINY_TRAINED_TOP_K)] < perplexity["1"]


@pytest.mark.slow
def test_the_demo_prompts_fit_and_the_trained_model_continues_them(built):
    path, _ = built
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_experts_per_tok == TINY_TRAINED_TOP_K
    prompts = json.loads(DEMO_PROMPTS.read_text())
    lengths = {category: [] for category in CATEGORIES}
    for prompt in prompts:
        lengths[prompt["category"]].append(len(tokenizer(prompt["text"])["input_ids"]))
    assert max(lengths["long_context"]) <= 700
    assert max(max(lengths[c]) for c in CATEGORIES if c != "long_context") <= 200

    texts = [p["text"] for p in prompts[::6]]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    continuations = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert all(any(c.isalpha() or c.isdigit() for c in text) for text in continuations)
