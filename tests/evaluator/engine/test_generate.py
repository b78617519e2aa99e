"""Batched generation for one arm: one-at-a-time greedy tokens, reproducible sampling, refusals, OOM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evaluator.engine.context import ContextConfig
from evaluator.engine.depth import DepthPolicy, apply_depth
from evaluator.engine.generate import Request, Result, Sampling, generate_arm, prompt_token_counts
from evaluator.engine.loading import load_checkpoint

from .conftest import SENTENCES

# Different lengths, so batches need left padding.
PROMPTS = [" ".join(sentence.split()[: 2 + index]) for index, sentence in enumerate(SENTENCES)] + [
    "the lazy dog",
    "send the report",
]
NATIVE = ContextConfig.native()
GREEDY = Sampling(max_new_tokens=12)


def _requests(prompts: list[str] = PROMPTS, seed: int = 7, **labels: object) -> list[Request]:
    return [
        Request(key=f"p{index}", prompt=prompt, seed=seed, **labels) for index, prompt in enumerate(prompts)
    ]


def _alone(loaded, prompt: str, k: int, max_new_tokens: int = 12) -> list[int]:
    encoded = loaded.tokenizer(prompt, return_tensors="pt")
    with apply_depth(loaded, k=k):
        output = loaded.model.generate(
            **encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, eos_token_id=1
        )
    tokens = output[0, encoded["input_ids"].shape[1] :].tolist()
    return tokens[: tokens.index(1) + 1] if 1 in tokens else tokens


@pytest.mark.parametrize("k", [4, 8])
def test_batched_greedy_equals_one_prompt_at_a_time(loaded, k: int) -> None:
    results = generate_arm(
        loaded,
        requests=_requests(),
        depth=DepthPolicy.fixed(k),
        context=NATIVE,
        sampling=GREEDY,
        batch_size=3,
    )
    assert [result.key for result in results] == [f"p{index}" for index in range(len(PROMPTS))]
    for prompt, result in zip(PROMPTS, results, strict=True):
        assert result.error is None
        assert list(result.token_ids) == _alone(loaded, prompt, k)
        assert result.text == loaded.tokenizer.decode(result.token_ids, skip_special_tokens=True)
        assert result.new_tokens == len(result.token_ids) and result.depth_k == k
        assert result.mean_active_experts == k
        assert result.routing["tokens"] == result.prompt_tokens + result.new_tokens - 1
        assert result.seconds > 0 and result.tokens_per_s > 0


def test_by_tag_groups_prompts_by_their_depth(qwen3) -> None:
    requests = [
        Request("deep", PROMPTS[3], seed=1, tags=("reasoning", "short")),
        Request("shallow", PROMPTS[4], seed=1, tags=("short",)),
        Request("default", PROMPTS[5], seed=1),
    ]
    policy = DepthPolicy.by_tag({"reasoning": 12, "short": 2}, 6)
    results = generate_arm(qwen3, requests=requests, depth=policy, context=NATIVE, sampling=GREEDY)
    assert [(r.key, r.depth_k, r.mean_active_experts) for r in results] == [
        ("deep", 12, 12.0),
        ("shallow", 2, 2.0),
        ("default", 6, 6.0),
    ]
    assert list(results[0].token_ids) == _alone(qwen3, PROMPTS[3], 12)


def test_dynamic_depth_records_the_depth_it_used(qwen3) -> None:
    results = generate_arm(
        qwen3, requests=_requests(), depth=DepthPolicy.dynamic(0.7, 2, 10), context=NATIVE, sampling=GREEDY
    )
    means = [result.mean_active_experts for result in results]
    assert all(result.depth_k is None and result.error is None for result in results)
    assert all(2.0 <= mean <= 10.0 for mean in means) and len(set(means)) > 1


def test_sampling_is_reproducible_for_the_same_seeds(qwen3) -> None:
    sampling = Sampling(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=0.95, top_k=40)

    def run(seed: int) -> list[str]:
        results = generate_arm(
            qwen3,
            requests=_requests(seed=seed),
            depth=DepthPolicy.fixed(4),
            context=NATIVE,
            sampling=sampling,
        )
        return [" ".join(map(str, result.token_ids)) for result in results]

    state = torch.random.get_rng_state()
    first = run(11)
    assert torch.equal(torch.random.get_rng_state(), state)  # the process's random stream is left alone
    assert run(11) == first
    assert run(12) != first


def test_a_prompt_over_the_limit_is_an_error_not_a_truncation(qwen3) -> None:
    long_prompt = SENTENCES[0]  # 9 tokens
    requests = _requests([long_prompt, "the lazy dog", ""])
    context = ContextConfig.native(input_budget=5)
    results = generate_arm(
        qwen3, requests=requests, depth=DepthPolicy.fixed(4), context=context, sampling=GREEDY
    )
    assert results[0].error is not None and "9 tokens but this arm accepts at most 5" in results[0].error
    assert (results[0].prompt_tokens, results[0].text, results[0].new_tokens) == (9, "", 0)
    assert results[1].error is None and results[1].new_tokens > 0
    assert results[2].error == "The prompt is empty once tokenized"
    # The window also counts: 128 positions minus the tokens to generate.
    window = generate_arm(
        qwen3,
        requests=_requests([long_prompt]),
        depth=DepthPolicy.fixed(4),
        context=NATIVE,
        sampling=Sampling(max_new_tokens=125),
    )
    assert "at most 3" in window[0].error


def test_prompt_token_counts_match_what_generation_reports(qwen3) -> None:
    counts = prompt_token_counts(qwen3.tokenizer, PROMPTS)
    results = generate_arm(
        qwen3, requests=_requests(), depth=DepthPolicy.fixed(4), context=NATIVE, sampling=GREEDY
    )
    assert counts == [result.prompt_tokens for result in results]
    assert prompt_token_counts(qwen3.tokenizer, []) == []


@pytest.fixture
def fresh_qwen3(qwen3_path: Path):
    """A model of its own, since the tests below replace its generate."""
    return load_checkpoint(qwen3_path, device="cpu")


def test_out_of_memory_splits_the_batch_until_it_fits(fresh_qwen3, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = generate_arm(
        fresh_qwen3, requests=_requests(), depth=DepthPolicy.fixed(4), context=NATIVE, sampling=GREEDY
    )
    real_generate = fresh_qwen3.model.generate
    sizes: list[int] = []

    def only_one_fits(input_ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
        sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(input_ids, **kwargs)

    monkeypatch.setattr(fresh_qwen3.model, "generate", only_one_fits)
    results = generate_arm(
        fresh_qwen3, requests=_requests(), depth=DepthPolicy.fixed(4), context=NATIVE, sampling=GREEDY
    )
    assert sizes[0] == len(PROMPTS) and sizes.count(1) == len(PROMPTS)
    assert [r.token_ids for r in results] == [r.token_ids for r in expected]


def test_a_prompt_that_never_fits_fails_alone(fresh_qwen3, monkeypatch: pytest.MonkeyPatch) -> None:
    real_generate = fresh_qwen3.model.generate
    poison = fresh_qwen3.tokenizer("philosophy")["input_ids"][0]

    def fails_on_philosophy(input_ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
        if (input_ids == poison).any():
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return real_generate(input_ids, **kwargs)

    monkeypatch.setattr(fresh_qwen3.model, "generate", fails_on_philosophy)
    results: list[Result] = generate_arm(
        fresh_qwen3, requests=_requests(), depth=DepthPolicy.fixed(4), context=NATIVE, sampling=GREEDY
    )
    failed = [result.key for result in results if result.error]
    assert failed == ["p1"]  # "philosophy asks what"
    assert "Out of memory even for this prompt alone" in results[1].error
    assert all(result.new_tokens > 0 for result in results if not result.error)


def test_sampling_round_trips_and_validates() -> None:
    sampling = Sampling(max_new_tokens=32, do_sample=True, temperature=0.7, top_p=0.9, top_k=20)
    assert Sampling.from_dict(sampling.to_dict()) == sampling
    with pytest.raises(ValueError, match=r"Unknown sampling keys \['beams'\]"):
        Sampling.from_dict({"beams": 4})
    with pytest.raises(ValueError, match="temperature must be above 0"):
        Sampling.from_dict({"temperature": 0})
    with pytest.raises(ValueError, match="Sampling max_new_tokens must be int, got '32'"):
        Sampling.from_dict({"max_new_tokens": "32"})
    with pytest.raises(ValueError, match="Sampling do_sample must be bool, got 1"):
        Sampling.from_dict({"do_sample": 1})
    assert Sampling.from_dict({"temperature": 1, "top_p": 0.5}).temperature == 1
