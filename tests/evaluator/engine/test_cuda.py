"""On a GPU (skipped elsewhere): grouped experts kept while decoding, samples independent of their batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evaluator.engine.context import ContextConfig
from evaluator.engine.depth import DepthPolicy, apply_depth
from evaluator.engine.experts import NAME
from evaluator.engine.generate import Request, Sampling, generate_arm
from evaluator.engine.loading import load_checkpoint

from .conftest import SENTENCES

# Different lengths, so the batch needs left padding.
PROMPTS = [" ".join(sentence.split()[: 2 + index]) for index, sentence in enumerate(SENTENCES)]

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def on_gpu(qwen3_path: Path):
    return load_checkpoint(qwen3_path, device="cuda", dtype="bf16")


def test_generate_on_a_gpu_keeps_the_engine_experts_while_decoding(on_gpu) -> None:
    seen: set[str] = set()
    experts = next(m for m in on_gpu.model.modules() if type(m).__name__.endswith("Experts"))
    handle = experts.register_forward_pre_hook(
        lambda module, args: seen.add(module.config._experts_implementation)
    )
    try:
        encoded = on_gpu.tokenizer("the quick brown fox", return_tensors="pt").to("cuda")
        on_gpu.model.generate(**encoded, max_new_tokens=3, do_sample=False, pad_token_id=0)
    finally:
        handle.remove()
    assert seen == {NAME}  # transformers would have swapped "grouped_mm" for "batched_mm" here


def test_engine_experts_equal_grouped_mm_on_the_gpu(on_gpu) -> None:
    encoded = on_gpu.tokenizer("the quick brown fox jumps", return_tensors="pt").to("cuda")
    with apply_depth(on_gpu, k=6), torch.no_grad():
        ours = on_gpu.model(**encoded).logits
        on_gpu.model.set_experts_implementation("grouped_mm")
        try:
            stock = on_gpu.model(**encoded).logits
        finally:
            on_gpu.model.set_experts_implementation(NAME)
    assert torch.equal(ours, stock)


def test_gpu_samples_ignore_their_batch_and_dynamic_depth_costs_its_active_experts(on_gpu) -> None:
    native = ContextConfig.native()
    sampling = Sampling(max_new_tokens=10, do_sample=True, temperature=1.2, top_p=0.95, top_k=40)
    requests = [Request(index, prompt, seed=3) for index, prompt in enumerate(PROMPTS)]
    for depth in (DepthPolicy.fixed(4), DepthPolicy.dynamic(0.7, 2, 10)):
        together = generate_arm(on_gpu, requests=requests, depth=depth, context=native, sampling=sampling)
        alone = [
            generate_arm(on_gpu, requests=[request], depth=depth, context=native, sampling=sampling)[0]
            for request in requests
        ]
        assert [r.token_ids for r in together] == [r.token_ids for r in alone]
        assert all(r.compute_experts_per_token == r.mean_active_experts for r in together)
