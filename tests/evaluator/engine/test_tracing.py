"""Routing traces: counts per layer and expert, real tokens only, one summary per batch row."""

from __future__ import annotations

import json
import math

import torch

from evaluator.engine.depth import apply_depth
from evaluator.engine.tracing import RoutingTrace

PROMPTS = ["the quick brown fox jumps over the lazy dog", "one two three"]


def _batch(loaded, prompts: list[str]) -> dict[str, torch.Tensor]:
    return loaded.tokenizer(prompts, return_tensors="pt", padding=True)


def test_fixed_k_counts_tokens_times_k_in_every_layer(loaded) -> None:
    encoded = _batch(loaded, PROMPTS[:1])
    tokens = encoded["input_ids"].shape[1]
    with apply_depth(loaded, k=6), RoutingTrace(loaded) as trace, torch.no_grad():
        loaded.model(**encoded)
    summary = trace.summary()
    layers = len(loaded.routers)
    assert summary["tokens"] == tokens
    assert summary["layers"] == layers
    assert len(summary["counts"]) == layers and all(len(row) == 16 for row in summary["counts"])
    assert [sum(row) for row in summary["counts"]] == [tokens * 6] * layers
    assert summary["mean_active_experts"] == 6.0
    assert summary["mean_active_experts_per_layer"] == [6.0] * layers
    assert 0.0 < summary["mean_entropy"] <= math.log(16)
    json.dumps(summary)


def test_padding_is_not_counted_and_rows_match_single_prompts(loaded) -> None:
    encoded = _batch(loaded, PROMPTS)
    assert encoded["attention_mask"][1].tolist()[0] == 0  # the short prompt is left padded
    with RoutingTrace(loaded) as trace, torch.no_grad():
        loaded.model(**encoded)
    rows = trace.summaries()
    assert len(rows) == 2
    for prompt, row in zip(PROMPTS, rows, strict=True):
        with RoutingTrace(loaded) as alone, torch.no_grad():
            loaded.model(**_batch(loaded, [prompt]))
        assert row["tokens"] == len(loaded.tokenizer(prompt)["input_ids"])
        assert row["counts"] == alone.summary()["counts"]
        assert row["mean_entropy"] == alone.summary()["mean_entropy"]
    total = trace.summary()
    assert total["tokens"] == rows[0]["tokens"] + rows[1]["tokens"]


def test_generation_counts_prompt_and_fed_back_tokens_but_not_what_follows_eos(qwen3) -> None:
    encoded = _batch(qwen3, PROMPTS)
    width = encoded["input_ids"].shape[1]
    lengths = encoded["attention_mask"].sum(1).tolist()
    free = qwen3.model.generate(
        **encoded, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    # Make the third token the first row generates its end of sequence, so that row stops early.
    eos = free[0, width + 2].item()
    with RoutingTrace(qwen3, eos_token_ids=[eos]) as trace:
        output = qwen3.model.generate(
            **encoded, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=eos
        )
    produced = []
    for row, summary in enumerate(trace.summaries()):
        new = output[row, width:].tolist()
        produced.append(new.index(eos) + 1 if eos in new else len(new))
        # Each generated token but the last is fed back; an eos and the filler after it are not routed.
        assert summary["tokens"] == lengths[row] + produced[row] - 1
        assert sum(summary["counts"][0]) == summary["tokens"] * 4
    assert produced[0] <= 3 < 12


def test_a_trace_stops_counting_when_it_ends(qwen3) -> None:
    encoded = _batch(qwen3, PROMPTS[:1])
    with RoutingTrace(qwen3) as trace, torch.no_grad():
        qwen3.model(**encoded)
    recorded = trace.summary()
    with torch.no_grad():
        qwen3.model(**encoded)
    assert trace.summary() == recorded
