"""Batched generation for one arm: one-at-a-time greedy tokens, batch-independent samples, shared work.

Also refusals, out-of-memory splits and the cost of dynamic depth.
"""

from __future__ import annotations

import pytest
import torch

from evaluator.engine import generate as generate_module
from evaluator.engine.context import ContextConfig
from evaluator.engine.depth import DepthPolicy, apply_depth
from evaluator.engine.generate import Request, Result, Sampling, generate_arm, prompt_token_counts

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


def _alone(loaded, prompt: str, k: int, max_new_tokens: int = 12, **options: object) -> list[int]:
    encoded = loaded.tokenizer(prompt, return_tensors="pt")
    with apply_depth(loaded, k=k):
        output = loaded.model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=1,
            **options,
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


def _counting_decode(monkeypatch: pytest.MonkeyPatch, fails=lambda rows: False) -> list[int]:
    """Batch sizes the engine decodes; a batch for which fails(rows) is true runs out of memory."""
    real_decode = generate_module.decode
    sizes: list[int] = []

    def decode(loaded, rows, **kwargs):
        sizes.append(len(rows))
        if fails(rows):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_decode(loaded, rows, **kwargs)

    monkeypatch.setattr(generate_module, "decode", decode)
    return sizes


def test_out_of_memory_splits_the_batch_until_it_fits(qwen3, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = generate_arm(
        qwen3, requests=_requests(), depth=DepthPolicy.fixed(4), context=NATIVE, sampling=GREEDY
    )
    sizes = _counting_decode(monkeypatch, fails=lambda rows: len(rows) > 1)
    results = generate_arm(
        qwen3, requests=_requests(), depth=DepthPolicy.fixed(4), context=NATIVE, sampling=GREEDY
    )
    assert sizes[0] == len(PROMPTS) and sizes.count(1) == len(PROMPTS)
    assert [r.token_ids for r in results] == [r.token_ids for r in expected]


def test_a_prompt_that_never_fits_fails_alone(qwen3, monkeypatch: pytest.MonkeyPatch) -> None:
    poison = qwen3.tokenizer("philosophy")["input_ids"][0]
    _counting_decode(monkeypatch, fails=lambda rows: any(poison in ids for ids in rows))
    results: list[Result] = generate_arm(
        qwen3, requests=_requests(), depth=DepthPolicy.fixed(4), context=NATIVE, sampling=GREEDY
    )
    failed = [result.key for result in results if result.error]
    assert failed == ["p1"]  # "philosophy asks what"
    assert "Out of memory even for this prompt alone" in results[1].error
    assert all(result.new_tokens > 0 for result in results if not result.error)


SAMPLING = Sampling(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=0.95, top_k=40)


def _texts(loaded, requests: list[Request], batch_size: int, depth: DepthPolicy) -> dict[object, tuple]:
    results = generate_arm(
        loaded, requests=requests, depth=depth, context=NATIVE, sampling=SAMPLING, batch_size=batch_size
    )
    return {result.key: result.token_ids for result in results}


@pytest.mark.parametrize("depth", [DepthPolicy.fixed(4), DepthPolicy.dynamic(0.7, 2, 10)])
def test_a_sample_does_not_depend_on_what_else_is_in_its_batch(qwen3, depth: DepthPolicy) -> None:
    requests = [*_requests(seed=5), Request("other seed", PROMPTS[2], seed=6)]
    together = _texts(qwen3, requests, batch_size=len(requests), depth=depth)
    assert len(set(together.values())) == len(requests)  # every (prompt, seed) has its own stream
    assert _texts(qwen3, requests, batch_size=3, depth=depth) == together  # chunked otherwise
    assert _texts(qwen3, requests[::-1], batch_size=2, depth=depth) == together  # in another order
    alone = {key: text for r in requests for key, text in _texts(qwen3, [r], 1, depth).items()}
    assert alone == together  # a retry of one row, or a split down to one row


def test_a_sample_does_not_depend_on_an_out_of_memory_split(qwen3, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _texts(qwen3, _requests(), batch_size=8, depth=DepthPolicy.fixed(4))
    sizes = _counting_decode(monkeypatch, fails=lambda rows: len(rows) > 3)
    assert _texts(qwen3, _requests(), batch_size=8, depth=DepthPolicy.fixed(4)) == whole
    assert sizes[0] == len(PROMPTS) and len(sizes) > 1  # it was split


def test_greedy_work_runs_once_per_prompt_whatever_the_seeds(qwen3, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = _counting_decode(monkeypatch)
    requests = [
        Request(f"{index}/{seed}", prompt, seed=seed)
        for index, prompt in enumerate(PROMPTS)
        for seed in (1, 2, 3)
    ]
    results = generate_arm(
        qwen3, requests=requests, depth=DepthPolicy.fixed(4), context=NATIVE, sampling=GREEDY, batch_size=16
    )
    assert sum(sizes) == len(PROMPTS)  # three seeds, one generation per prompt
    assert [result.key for result in results] == [request.key for request in requests]
    for index, prompt in enumerate(PROMPTS):
        texts = {results[3 * index + offset].token_ids for offset in range(3)}
        assert texts == {tuple(_alone(qwen3, prompt, 4))}
    sizes.clear()
    generate_arm(
        qwen3, requests=requests, depth=DepthPolicy.fixed(4), context=NATIVE, sampling=SAMPLING, batch_size=32
    )
    assert sum(sizes) == len(requests)  # sampled: every seed is its own draw


def test_greedy_with_repetition_penalty_and_min_new_tokens_equals_generate(qwen3) -> None:
    sampling = Sampling(max_new_tokens=10, repetition_penalty=1.3, min_new_tokens=6)
    results = generate_arm(
        qwen3,
        requests=_requests(),
        depth=DepthPolicy.fixed(4),
        context=NATIVE,
        sampling=sampling,
        batch_size=4,
    )
    for prompt, result in zip(PROMPTS, results, strict=True):
        expected = _alone(qwen3, prompt, 4, max_new_tokens=10, repetition_penalty=1.3, min_new_tokens=6)
        assert list(result.token_ids) == expected and result.new_tokens >= 6


def test_dynamic_depth_costs_the_experts_it_keeps(qwen3) -> None:
    policy = DepthPolicy.dynamic(0.7, 2, 10)
    results = generate_arm(qwen3, requests=_requests(), depth=policy, context=NATIVE, sampling=GREEDY)
    assert all(r.compute_experts_per_token == r.mean_active_experts < 10 for r in results)
    assert all(r.routing["compute_experts_per_token"] == r.compute_experts_per_token for r in results)
    fixed = generate_arm(
        qwen3, requests=_requests(), depth=DepthPolicy.fixed(6), context=NATIVE, sampling=GREEDY
    )
    assert all(r.compute_experts_per_token == r.mean_active_experts == 6 for r in fixed)


def test_an_implementation_that_computes_dropped_slots_reports_k_max(qwen3) -> None:
    previous = qwen3.experts_implementation
    qwen3.model.set_experts_implementation("grouped_mm")
    try:
        results = generate_arm(
            qwen3,
            requests=_requests(),
            depth=DepthPolicy.dynamic(0.7, 2, 10),
            context=NATIVE,
            sampling=GREEDY,
        )
    finally:
        qwen3.model.set_experts_implementation(previous)
    assert all(r.compute_experts_per_token == 10 > r.mean_active_experts for r in results)


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
