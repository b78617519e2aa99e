"""Benchmarks: the worker's generation path on a Qwen3-30B-A3B-shaped model, and the engine against generate.

`python -m evaluator.engine.bench --gpu` builds a model of Qwen3-30B-A3B's exact shape with random bf16
weights directly on the GPU (nothing is downloaded), measures the card's copy bandwidth in the same run, and
prints one JSON object. Every figure goes through `generate_arm` with routing traces on (what a worker runs)
and is the median of `--repeats` runs (3): decode tokens/s at batch 1 and 32 for k = 4, 8, 16 and a dynamic
arm at about half of k_max, each beside its bandwidth bound; the traces' overhead against the bare decoding
loop; prefill and time to first token at 8k, 32k and 128k prompt tokens under YaRN ×4, with KV cache and peak
memory; a 15k-token generation; the engine's invariants (greedy batched equals alone, samples independent of
their batch, greedy work once per prompt, a dynamic arm computing only its active experts); and the GPU
targets with what was measured. `--compare-vllm` runs the decode shapes on vLLM where it is installed.
`--cpu-small` runs the same code on a tiny configuration on the CPU in well under a minute. Needs only torch
and transformers 5.17+.

`bench_engine(path, prompts=...)` compares generate_arm with one-prompt-at-a-time `model.generate` on a real
checkpoint (the lead's Django command wraps it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .context import ContextConfig, apply_context
from .decode import DecodeOptions, decode
from .depth import DepthPolicy, apply_depth
from .generate import Request, Result, Sampling, _generation_config, default_options, generate_arm
from .loading import DTYPE_NAMES, LoadedModel, get_loaded, load_checkpoint, torch_dtype, wrap_model
from .memory import kv_bytes_per_token


def qwen3_30b_a3b_config() -> Any:
    """Qwen3-30B-A3B-Base's shape (the weights are random: only speed is measured)."""
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=151_936,
        hidden_size=2048,
        intermediate_size=6144,
        moe_intermediate_size=768,
        num_hidden_layers=48,
        num_attention_heads=32,
        num_key_value_heads=4,
        head_dim=128,
        num_experts=128,
        num_experts_per_tok=8,
        norm_topk_prob=True,
        max_position_embeddings=32_768,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=None,
        bos_token_id=None,
    )


def tiny_config() -> Any:
    """A few-megabyte Qwen3-MoE for running the benchmark code on a CPU."""
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=16,
        num_experts_per_tok=4,
        norm_topk_prob=True,
        max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        pad_token_id=0,
        eos_token_id=None,
        bos_token_id=None,
    )


def build_random_model(config: Any, *, device: str, dtype: torch.dtype) -> LoadedModel:
    """Random weights allocated and initialised on the target device (no slow CPU init, no copy)."""
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return wrap_model(model.eval(), load_seconds=time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, *, nbytes: int, repeats: int = 10) -> float:
    """Bytes per second moved by a device-to-device copy (each copy reads and writes nbytes)."""
    source = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    target = torch.empty_like(source)
    target.copy_(source)
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    _synchronize(device)
    return 2 * nbytes * repeats / (time.perf_counter() - started)


class _IdTokenizer:
    """Prompts written as space-separated token ids: a random-weight model has no vocabulary to speak of."""

    def __call__(self, texts: Sequence[str], add_special_tokens: bool = True) -> dict[str, list[list[int]]]:
        return {"input_ids": [[int(token) for token in text.split()] for text in texts]}

    def decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, tokens))


def _prompts(count: int, length: int, vocab: int, seed: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (count, length), generator=generator)
    return [" ".join(map(str, row)) for row in ids.tolist()]


class _DecodeRouting:
    """Mean distinct experts per layer a decoding step computes (what a batch must read), without syncs."""

    def __init__(self, loaded: LoadedModel, batch: int) -> None:
        self.loaded, self.batch = loaded, batch
        self.distinct = torch.zeros(len(loaded.routers), device=loaded.device)
        self.steps = 0
        self.handles: list[Any] = []

    def __enter__(self) -> _DecodeRouting:
        for layer, router in enumerate(self.loaded.routers):
            self.handles.append(router.register_forward_hook(self._router_hook(layer)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self.handles:
            handle.remove()

    def _router_hook(self, layer: int) -> Callable:
        def hook(router: nn.Module, inputs: tuple, outputs: tuple) -> None:
            scores, indices = outputs[1], outputs[2]
            if indices.shape[0] != self.batch:  # the prefill
                return
            if layer == 0:
                self.steps += 1
            # Only kept slots: a dropped one (weight 0) is not computed, so its expert is not read for it.
            kept = (scores != 0).float().reshape(-1)
            hit = torch.zeros(router.num_experts, device=indices.device)
            self.distinct[layer] += hit.scatter_reduce_(0, indices.reshape(-1), kept, "amax").sum()

        return hook

    def per_layer(self) -> list[float]:
        return (self.distinct / max(self.steps, 1)).tolist()


def _expert_bytes(loaded: LoadedModel) -> tuple[int, list[float]]:
    """Bytes of every non-expert weight, and of one expert per MoE layer."""
    model = loaded.model
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings().weight
    expert_parameters: dict[int, int] = {}
    per_layer = []
    for module in model.modules():
        if type(module).__name__.endswith("Experts") and hasattr(module, "gate_up_proj"):
            parameters = list(module.parameters())
            expert_parameters.update({id(p): p.nbytes for p in parameters})
            per_layer.append(sum(p.nbytes for p in parameters) / module.num_experts)
    dense = sum(p.nbytes for p in model.parameters() if id(p) not in expert_parameters and p is not embedding)
    if output is embedding:  # tied: the output projection reads the whole matrix anyway
        dense += embedding.nbytes
    return dense, per_layer


def _bytes_per_step(loaded: LoadedModel, batch: int, context_tokens: float, distinct: Sequence[float]) -> int:
    """Bytes a decoding step reads: every dense weight once, the experts the batch hit, and the KV cache."""
    dense, per_layer = _expert_bytes(loaded)
    embedding = loaded.model.get_input_embeddings().weight
    embedding_rows = batch * embedding.shape[1] * embedding.element_size()
    experts = sum(n * b for n, b in zip(distinct, per_layer, strict=True))
    kv = kv_bytes_per_token(loaded.model.config, embedding.element_size())
    return int(dense + embedding_rows + experts + batch * context_tokens * kv)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


@dataclass
class _Bench:
    """What the rows of one run share: the model, the measured bandwidth, repeats and the time budget."""

    loaded: LoadedModel
    bandwidth: float
    repeats: int
    budget_s: float
    options: DecodeOptions
    started: float = field(default_factory=time.perf_counter)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def out_of_time(self, label: dict[str, Any], *, estimate_s: float = 0.0) -> bool:
        """Whether a row expected to take estimate_s would end past the budget (then it is listed skipped)."""
        if time.perf_counter() - self.started + estimate_s <= self.budget_s:
            return False
        self.skipped.append({**label, "estimated_seconds": round(estimate_s, 1)})
        return True

    def run(
        self,
        requests: list[Request],
        policy: DepthPolicy,
        context: ContextConfig,
        sampling: Sampling,
        batch_size: int | None = None,
    ) -> list[Result]:
        """The worker's path: generate_arm, routing traces on."""
        return generate_arm(
            self.loaded,
            requests=requests,
            depth=policy,
            context=context,
            sampling=sampling,
            batch_size=batch_size or max(len(requests), 1),
            options=self.options,
        )


def _decode_seconds(result: Result) -> float:
    return max(result.seconds - result.first_token_seconds, 1e-9)


def calibrated_p(loaded: LoadedModel, *, k_max: int, target: int) -> float:
    """The dynamic policy's p at which a token keeps about target of its top k_max experts on this model."""
    masses: list[torch.Tensor] = []

    def hook(router: nn.Module, inputs: tuple, outputs: tuple) -> None:
        logits, _, indices = outputs
        probs = torch.softmax(logits.float(), dim=-1).gather(-1, indices)
        masses.append(probs[:, :target].sum(-1))

    input_ids = torch.randint(
        3, loaded.architecture.vocab_size, (4, 64), generator=torch.Generator().manual_seed(0)
    )
    handles = [router.register_forward_hook(hook) for router in loaded.routers]
    try:
        with apply_depth(loaded, k=k_max), torch.inference_mode():
            loaded.model(input_ids.to(loaded.device))
    finally:
        for handle in handles:
            handle.remove()
    return round(float(torch.cat(masses).median()), 6)


def decode_row(
    bench: _Bench, *, batch: int, policy: DepthPolicy, prompt_tokens: int, new_tokens: int
) -> dict[str, Any]:
    """Decode tokens/s of the worker's path for one (batch, arm), beside its bound (bandwidth / bytes)."""
    loaded = bench.loaded
    prompts = _prompts(batch, prompt_tokens, loaded.architecture.vocab_size, seed=batch)
    requests = [Request(index, prompt, seed=index) for index, prompt in enumerate(prompts)]
    sampling = Sampling(max_new_tokens=new_tokens)  # no end-of-sequence token: exactly new_tokens each
    with _DecodeRouting(loaded, batch) as routing:  # also the warm-up run
        warm = bench.run(requests, policy, ContextConfig.native(), sampling)
    runs = [bench.run(requests, policy, ContextConfig.native(), sampling)[0] for _ in range(bench.repeats)]
    rates = [batch * (new_tokens - 1) / _decode_seconds(result) for result in runs]
    distinct = routing.per_layer()
    step_bytes = _bytes_per_step(loaded, batch, prompt_tokens + new_tokens / 2, distinct)
    bound = batch * bench.bandwidth / step_bytes
    rate = _median(rates)
    return {
        "batch": batch,
        "arm": policy.describe(),
        "k": policy.k,
        "tokens_per_s": round(rate, 2),
        "tokens_per_s_runs": [round(r, 2) for r in rates],
        "bound_tokens_per_s": round(bound, 2),
        "fraction_of_bound": round(rate / bound, 4),
        "seconds_per_step": round(batch / rate, 6) if rate else None,
        "first_token_seconds": round(_median([r.first_token_seconds for r in runs]), 4),
        "bytes_per_step": step_bytes,
        "distinct_experts_per_layer": round(sum(distinct) / len(distinct), 2),
        "mean_active_experts": round(_median([r.mean_active_experts for r in warm]), 4),
        "compute_experts_per_token": round(_median([r.compute_experts_per_token for r in warm]), 4),
        "experts_implementation_decode": warm[0].routing["experts_ran"]["decode"],
    }


def trace_overhead(
    bench: _Bench, *, batch: int, k: int, prompt_tokens: int, new_tokens: int
) -> dict[str, Any]:
    """The worker's path (routing traces on) against the bare decoding loop on the same batch."""
    loaded = bench.loaded
    prompts = _prompts(batch, prompt_tokens, loaded.architecture.vocab_size, seed=batch)
    requests = [Request(index, prompt, seed=index) for index, prompt in enumerate(prompts)]
    rows = [loaded.tokenizer([prompt])["input_ids"][0] for prompt in prompts]
    sampling = Sampling(max_new_tokens=new_tokens)
    policy = DepthPolicy.fixed(k)
    traced = [_decode_seconds(bench.run(requests, policy, ContextConfig.native(), sampling)[0])]
    bare = []
    with apply_depth(loaded, k=k):
        for _ in range(bench.repeats):
            decoded = decode(loaded, rows, sampling=sampling, options=bench.options)
            bare.append(max(decoded.seconds - decoded.first_token_seconds, 1e-9))
    traced += [
        _decode_seconds(bench.run(requests, policy, ContextConfig.native(), sampling)[0])
        for _ in range(bench.repeats - 1)
    ]
    traced_s, bare_s = _median(traced), _median(bare)
    return {
        "batch": batch,
        "k": k,
        "traced_tokens_per_s": round(batch * (new_tokens - 1) / traced_s, 2),
        "bare_tokens_per_s": round(batch * (new_tokens - 1) / bare_s, 2),
        "overhead": round(traced_s / bare_s - 1, 4),
    }


def _peak_memory(device: torch.device) -> Callable[[], int | None]:
    """Bytes allocated above the current level until the returned function is called (None on the CPU)."""
    if device.type != "cuda":
        return lambda: None
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    return lambda: torch.cuda.max_memory_allocated(device) - baseline


def prefill_row(
    bench: _Bench, *, prompt_tokens: int, k: int, context: ContextConfig, new_tokens: int
) -> dict[str, Any]:
    """Prefill and time to first token for one long prompt; its KV cache; the bound of reading it all once."""
    loaded = bench.loaded
    requests = [
        Request(0, _prompts(1, prompt_tokens, loaded.architecture.vocab_size, seed=prompt_tokens)[0], 0)
    ]
    sampling = Sampling(max_new_tokens=new_tokens)
    runs, peaks = [], []
    for _ in range(bench.repeats):
        peak = _peak_memory(loaded.device)
        result = bench.run(requests, DepthPolicy.fixed(k), context, sampling)[0]
        if result.error:
            return {"prompt_tokens": prompt_tokens, "context": context.describe(), "error": result.error}
        runs.append(result)
        peaks.append(peak())
    ttft = _median([r.first_token_seconds for r in runs])
    kv_per_token = kv_bytes_per_token(loaded.model.config, loaded.dtype.itemsize)
    dense, per_layer = _expert_bytes(loaded)
    chunks = -(-prompt_tokens // (bench.options.prefill_chunk or prompt_tokens))
    # Each prefill forward reads every weight (a long chunk touches every expert) and the cache so far.
    weights = dense + sum(per_layer) * loaded.architecture.num_experts
    bound_seconds = (chunks * weights + kv_per_token * prompt_tokens * (chunks + 1) / 2) / bench.bandwidth
    return {
        "prompt_tokens": prompt_tokens,
        "context": context.describe(),
        "k": k,
        "first_token_seconds": round(ttft, 4),
        "first_token_seconds_runs": [round(r.first_token_seconds, 4) for r in runs],
        "prefill_tokens_per_s": round(prompt_tokens / ttft, 1) if ttft else None,
        "bound_first_token_seconds": round(bound_seconds, 4),
        "fraction_of_bound": round(bound_seconds / ttft, 4) if ttft else None,
        "kv_cache_bytes": kv_per_token * (prompt_tokens + new_tokens),
        "peak_memory_bytes": _median([p for p in peaks if p is not None]) or None,
        "prefill_chunk": bench.options.prefill_chunk,
    }


def long_generation_row(bench: _Bench, *, new_tokens: int, k: int, prompt_tokens: int) -> dict[str, Any]:
    """One stream generating new_tokens tokens: its decode rate over a growing cache, and the final cache."""
    loaded = bench.loaded
    requests = [Request(0, _prompts(1, prompt_tokens, loaded.architecture.vocab_size, seed=7)[0], 0)]
    sampling = Sampling(max_new_tokens=new_tokens)
    runs = []
    for _ in range(bench.repeats):
        # A run can take minutes on a GPU: stop repeating when the budget is spent, and say how many ran.
        if runs and time.perf_counter() - bench.started > bench.budget_s:
            break
        runs.append(bench.run(requests, DepthPolicy.fixed(k), ContextConfig.native(), sampling)[0])
    rates = [(r.new_tokens - 1) / _decode_seconds(r) for r in runs]
    rate = _median(rates)
    context_tokens = prompt_tokens + new_tokens / 2
    bound = bench.bandwidth / _bytes_per_step(loaded, 1, context_tokens, [float(k)] * len(loaded.routers))
    return {
        "new_tokens": runs[0].new_tokens,
        "prompt_tokens": prompt_tokens,
        "k": k,
        "runs": len(runs),
        "tokens_per_s": round(rate, 2),
        "tokens_per_s_runs": [round(r, 2) for r in rates],
        "bound_tokens_per_s": round(bound, 2),
        "fraction_of_bound": round(rate / bound, 4) if bound else None,
        "seconds": round(_median([r.seconds for r in runs]), 2),
        "kv_cache_bytes": kv_bytes_per_token(loaded.model.config, loaded.dtype.itemsize)
        * (prompt_tokens + new_tokens),
    }


@contextmanager
def _counted_rows() -> Iterator[list[int]]:
    """Rows the engine decodes while the body runs (to show that duplicate greedy work runs once)."""
    from . import generate as generate_module

    real, sizes = generate_module.decode, []

    def counting(loaded: LoadedModel, rows: Sequence[Sequence[int]], **kwargs: Any) -> Any:
        sizes.append(len(rows))
        return real(loaded, rows, **kwargs)

    generate_module.decode = counting
    try:
        yield sizes
    finally:
        generate_module.decode = real


def engine_checks(bench: _Bench, *, k: int, prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    """What holds on any device: greedy batched equals alone, samples ignore their batch, greedy runs once."""
    loaded, native = bench.loaded, ContextConfig.native()
    policy = DepthPolicy.fixed(k)
    lengths = [prompt_tokens, prompt_tokens // 2, prompt_tokens - 3, 5]  # different lengths: left padding
    prompts = [_prompts(1, n, loaded.architecture.vocab_size, seed=100 + n)[0] for n in lengths]
    requests = [Request(index, prompt, seed=index) for index, prompt in enumerate(prompts)]
    greedy = Sampling(max_new_tokens=new_tokens)
    together = bench.run(requests, policy, native, greedy)
    alone = [bench.run([request], policy, native, greedy)[0] for request in requests]
    matches = sum(a.token_ids == b.token_ids for a, b in zip(together, alone, strict=True))

    sampled = Sampling(max_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_p=0.95, top_k=50)
    first = bench.run(requests, policy, native, sampled)
    companions = [Request("other", prompts[1], seed=99), requests[0], requests[2]]
    second = bench.run(companions, policy, native, sampled, batch_size=2)
    independent = first[0].token_ids == second[1].token_ids and first[2].token_ids == second[2].token_ids

    with _counted_rows() as rows:
        seeds = [Request(f"{i}/{s}", p, seed=s) for i, p in enumerate(prompts[:2]) for s in range(3)]
        shared = bench.run(seeds, policy, native, greedy)
    return {
        "greedy_batched_equals_alone": f"{matches}/{len(requests)}",
        "samples_independent_of_batch": independent,
        "greedy_rows_decoded_for_2_prompts_x_3_seeds": sum(rows),
        "greedy_seeds_share_one_text": all(
            shared[3 * i].token_ids == shared[3 * i + j].token_ids for i in range(2) for j in range(3)
        ),
    }


def _targets(report: dict[str, Any], *, k_max: int) -> dict[str, Any]:
    """The GPU goals, each with what this run measured (meaningful on the reference shape on a GPU only)."""
    rows = {(row["batch"], row["arm"]): row for row in report["decode"]}

    def fraction(batch: int, k: int) -> float | None:
        row = rows.get((batch, DepthPolicy.fixed(k).describe()))
        return row["fraction_of_bound"] if row else None

    dynamic = [row for row in report["decode"] if row["k"] is None]
    deepest = {row["batch"]: row for row in report["decode"] if row["k"] == k_max}
    ratios = [
        round(row["seconds_per_step"] / deepest[row["batch"]]["seconds_per_step"], 4)
        for row in dynamic
        if row["batch"] in deepest and row["seconds_per_step"] and deepest[row["batch"]]["seconds_per_step"]
    ]
    longest = max(report["prefill"], key=lambda row: row["prompt_tokens"], default=None)
    big, small = max(report["settings"]["batches"]), min(report["settings"]["batches"])
    targets = {
        f"fraction_of_bound_batch_{big}_k8": {"target": 0.5, "measured": fraction(big, 8)},
        f"fraction_of_bound_batch_{small}_k8": {"target": 0.3, "measured": fraction(small, 8)},
        "dynamic_time_over_k_max_time": {"target": 0.65, "measured": max(ratios) if ratios else None},
        "longest_prefill_completes": {
            "target": True,
            "measured": bool(longest and "error" not in longest),
            "prompt_tokens": longest["prompt_tokens"] if longest else None,
        },
    }
    for name, entry in targets.items():
        measured = entry["measured"]
        if measured is None:
            entry["met"] = None
        elif name.startswith("dynamic"):
            entry["met"] = measured <= entry["target"]
        elif isinstance(entry["target"], bool):
            entry["met"] = measured is entry["target"]
        else:
            entry["met"] = measured >= entry["target"]
    return targets


def run_bench(
    config: Any,
    *,
    device: str,
    dtype: torch.dtype,
    batches: Sequence[int],
    ks: Sequence[int],
    dynamic_k_max: int,
    prompt_tokens: int,
    new_tokens: int,
    prefill_lengths: Sequence[int],
    yarn_factor: float,
    long_new_tokens: int,
    copy_bytes: int,
    budget_s: float,
    repeats: int = 3,
    options: DecodeOptions | None = None,
    experts_implementation: str | None = None,
    compare_vllm: bool = False,
    save: Callable[[dict[str, Any]], None] = lambda report: None,
) -> dict[str, Any]:
    """Everything `--gpu` and `--cpu-small` print; rows that would end past budget_s are listed as skipped.

    save receives the report as it grows (after each long row), so a run cut short still leaves its figures.
    """
    import transformers

    loaded = build_random_model(config, device=device, dtype=dtype)
    loaded.tokenizer = _IdTokenizer()
    if experts_implementation:
        loaded.model.set_experts_implementation(experts_implementation)
    bench = _Bench(
        loaded=loaded,
        bandwidth=copy_bandwidth(loaded.device, nbytes=copy_bytes),
        repeats=repeats,
        budget_s=budget_s,
        options=options or default_options(loaded),
    )
    p = calibrated_p(loaded, k_max=dynamic_k_max, target=dynamic_k_max // 2)
    arms = [DepthPolicy.fixed(k) for k in ks] + [DepthPolicy.dynamic(p, 1, dynamic_k_max)]
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "architecture": loaded.architecture.to_dict(),
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "build_seconds": round(loaded.load_seconds, 2),
        "copy_bandwidth_GBps": round(bench.bandwidth / 1e9, 1),
        "experts_implementation": loaded.experts_implementation,
        "experts_implementation_decode": None,
        "decode_options": bench.options.to_dict(),
        "repeats": repeats,
        "kv_bytes_per_token": kv_bytes_per_token(loaded.model.config, loaded.dtype.itemsize),
        "settings": {
            "batches": list(batches),
            "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens,
            "dynamic": arms[-1].to_dict(),
        },
        "decode": [],
        "trace_overhead": None,
        "prefill": [],
        "long_generation": None,
        "checks": engine_checks(
            bench, k=ks[len(ks) // 2], prompt_tokens=prompt_tokens, new_tokens=new_tokens
        ),
    }
    for batch in batches:
        for policy in arms:
            if not bench.out_of_time({"decode": policy.describe(), "batch": batch}):
                row = decode_row(
                    bench, batch=batch, policy=policy, prompt_tokens=prompt_tokens, new_tokens=new_tokens
                )
                report["decode"].append(row)
                save(report)
    implementations = {name for row in report["decode"] for name in row["experts_implementation_decode"]}
    report["experts_implementation_decode"] = sorted(implementations)
    dynamic_rows = [row for row in report["decode"] if row["k"] is None]
    report["checks"]["dynamic_compute_equals_active"] = all(
        row["compute_experts_per_token"] == row["mean_active_experts"] for row in dynamic_rows
    )
    k_mid = 8 if 8 in ks else ks[len(ks) // 2]
    if not bench.out_of_time({"trace_overhead": max(batches)}):
        report["trace_overhead"] = trace_overhead(
            bench, batch=max(batches), k=k_mid, prompt_tokens=prompt_tokens, new_tokens=new_tokens
        )
    yarn = ContextConfig.yarn(yarn_factor)
    previous: dict[str, Any] | None = None
    for length in prefill_lengths:
        # Attention grows with the square of the prompt: a bound on the next row from the last one.
        estimate = 0.0
        if previous and "error" not in previous:
            scale = (length / previous["prompt_tokens"]) ** 2
            estimate = bench.repeats * previous["first_token_seconds"] * scale
        if not bench.out_of_time({"prefill": length}, estimate_s=estimate):
            previous = prefill_row(bench, prompt_tokens=length, k=k_mid, context=yarn, new_tokens=2)
            report["prefill"].append(previous)
            save(report)
    single = next((row for row in report["decode"] if row["batch"] == 1 and row["k"] == k_mid), None)
    # At least one run of the long generation must fit: estimated from the batch-1 decode rate.
    estimate = long_new_tokens / single["tokens_per_s"] if single and single["tokens_per_s"] else 0.0
    if not bench.out_of_time({"long_generation": long_new_tokens}, estimate_s=estimate):
        report["long_generation"] = long_generation_row(
            bench, new_tokens=long_new_tokens, k=k_mid, prompt_tokens=prompt_tokens
        )
    report["targets"] = _targets(report, k_max=dynamic_k_max)
    if compare_vllm:
        # vLLM needs the card to itself: our model's weights leave it first (compare_vllm runs last).
        loaded.model.to("meta")
        torch.cuda.empty_cache()
        report["vllm"] = compare_with_vllm(
            report, config, ks=ks, prompt_tokens=prompt_tokens, new_tokens=new_tokens
        )
    report["skipped"] = bench.skipped
    report["seconds"] = round(time.perf_counter() - bench.started + loaded.load_seconds, 1)
    save(report)
    return report


def _vllm_seconds(llm: Any, prompts: list[dict[str, Any]], tokens: int) -> float:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=tokens, min_tokens=tokens, ignore_eos=True, temperature=0)
    started = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    return time.perf_counter() - started


def compare_with_vllm(
    report: dict[str, Any], config: Any, *, ks: Sequence[int], prompt_tokens: int, new_tokens: int
) -> dict[str, Any]:
    """The same decode shapes on vLLM (dummy weights, num_experts_per_tok per arm), and our ratio to it."""
    try:
        from vllm import LLM
    except ImportError:
        return {"error": "vLLM is not installed"}
    import gc
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        config.architectures = ["Qwen3MoeForCausalLM"]
        config.save_pretrained(folder)
        for k in ks:
            llm = LLM(
                model=folder,
                load_format="dummy",
                skip_tokenizer_init=True,
                hf_overrides={"num_experts_per_tok": k},
                dtype="bfloat16",
                max_model_len=prompt_tokens + new_tokens + 16,
                enforce_eager=False,
            )
            for batch in report["settings"]["batches"]:
                prompts = [
                    {"prompt_token_ids": [int(t) for t in text.split()]}
                    for text in _prompts(batch, prompt_tokens, config.vocab_size, seed=batch)
                ]
                _vllm_seconds(llm, prompts, new_tokens)  # warm-up
                decode = _median(
                    [
                        _vllm_seconds(llm, prompts, new_tokens) - _vllm_seconds(llm, prompts, 1)
                        for _ in range(3)
                    ]
                )
                rate = batch * (new_tokens - 1) / max(decode, 1e-9)
                ours = next(
                    (row for row in report["decode"] if row["batch"] == batch and row["k"] == k), None
                )
                rows.append(
                    {
                        "batch": batch,
                        "k": k,
                        "vllm_tokens_per_s": round(rate, 2),
                        "ratio": round(ours["tokens_per_s"] / rate, 4) if ours else None,
                    }
                )
            del llm
            gc.collect()
            torch.cuda.empty_cache()
    return {"rows": rows}


def _timed(function: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    _synchronize(device)
    started = time.perf_counter()
    value = function()
    _synchronize(device)
    return value, time.perf_counter() - started


def bench_engine(
    path: str,
    *,
    prompts: list[str],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    device: str | None = None,
) -> dict[str, Any]:
    """generate_arm against one-at-a-time model.generate on the same prompts, both forced to equal lengths.

    reload_ms is None on a GPU without room for a second copy of the model.
    """
    loaded = get_loaded(path, device=device)
    sampling = Sampling(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    generation_config = _generation_config(loaded, sampling)

    def naive() -> list[list[int]]:
        outputs = []
        for prompt in prompts:
            encoded = loaded.tokenizer(prompt, return_tensors="pt").to(loaded.device)
            output = loaded.model.generate(**encoded, generation_config=generation_config)
            outputs.append(output[0, encoded["input_ids"].shape[1] :].tolist())
        return outputs

    requests = [Request(index, prompt, seed=0) for index, prompt in enumerate(prompts)]
    default = DepthPolicy.fixed(loaded.architecture.default_top_k)

    def engine() -> list[Any]:
        return generate_arm(
            loaded,
            requests=requests,
            depth=default,
            context=ContextConfig.native(),
            sampling=sampling,
            batch_size=batch_size,
        )

    naive_tokens, naive_seconds = _timed(naive, loaded.device)
    results, engine_seconds = _timed(engine, loaded.device)
    matches = sum(
        result.error is None and list(result.token_ids) == tokens
        for result, tokens in zip(results, naive_tokens, strict=True)
    )

    deeper = min(2 * loaded.architecture.default_top_k, loaded.architecture.num_experts)
    extended = ContextConfig.yarn(4)
    with apply_context(loaded, extended):  # build and cache the YaRN rotary module first, as a worker would
        pass
    repeats = 1000
    _, switch_seconds = _timed(lambda: _switch_arms(loaded, deeper, extended, repeats), loaded.device)

    naive_count = sum(len(tokens) for tokens in naive_tokens)
    engine_count = sum(result.new_tokens for result in results)
    naive_rate = naive_count / naive_seconds
    engine_rate = engine_count / engine_seconds
    return {
        "prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "naive_tokens_per_s": round(naive_rate, 2),
        "engine_tokens_per_s": round(engine_rate, 2),
        "speedup": round(engine_rate / naive_rate, 2),
        "greedy_match_rate": matches / len(prompts) if prompts else 1.0,
        "arm_switch_ms": round(switch_seconds / repeats * 1000, 4),
        "experts_implementation_decode": sorted(
            {name for result in results if result.routing for name in result.routing["experts_ran"]["decode"]}
        ),
        "reload_ms": _reload_ms(loaded),
    }


def _reload_ms(loaded: LoadedModel) -> float | None:
    """Time to load the checkpoint again, what an arm would cost without the engine (None: no room)."""
    if loaded.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(loaded.device)
        if free < 1.1 * sum(p.nbytes for p in loaded.model.parameters()):
            return None  # a second copy does not fit beside the loaded model
    dtype_name = next(name for name in DTYPE_NAMES if torch_dtype(name) == loaded.dtype)
    _, seconds = _timed(
        lambda: load_checkpoint(loaded.path, dtype=dtype_name, device=str(loaded.device)), loaded.device
    )
    return round(seconds * 1000, 1)


def _switch_arms(loaded: LoadedModel, k: int, context: ContextConfig, repeats: int) -> None:
    for _ in range(repeats):
        with apply_depth(loaded, k=k), apply_context(loaded, context):
            pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluator.engine.bench", description=__doc__.splitlines()[0]
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--gpu", action="store_true", help="Qwen3-30B-A3B shape, random bf16 weights, on CUDA")
    mode.add_argument("--cpu-small", action="store_true", help="a tiny configuration on the CPU")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="decode rows' prompt length")
    parser.add_argument("--new-tokens", type=int, default=None, help="decode rows' generated tokens")
    parser.add_argument("--long-new-tokens", type=int, default=None, help="the long generation's length")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (the median is shown)")
    parser.add_argument("--budget-s", type=float, default=None, help="stop starting rows after this long")
    parser.add_argument(
        "--experts-implementation", default=None, help="e.g. grouped_mm, batched_mm, sonicmoe"
    )
    parser.add_argument("--static-cache", action="store_true", help="preallocated KV cache")
    parser.add_argument("--compile", action="store_true", help="decoding steps through torch.compile")
    parser.add_argument("--prefill-chunk", type=int, default=None, help="prompt columns per prefill forward")
    parser.add_argument("--compare-vllm", action="store_true", help="the decode rows on vLLM too")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here, row by row")
    args = parser.parse_args(argv)
    if args.gpu:
        if not torch.cuda.is_available():
            parser.error("--gpu needs a CUDA device")
        settings: dict[str, Any] = {
            "config": qwen3_30b_a3b_config(),
            "device": "cuda",
            "dtype": torch.bfloat16,
            "batches": (1, 32),
            "ks": (4, 8, 16),
            "dynamic_k_max": 16,
            "prompt_tokens": 64,
            "new_tokens": 32,
            "prefill_lengths": (8192, 32768, 131_072 - 8),
            "yarn_factor": 4.0,
            "long_new_tokens": 15_000,
            "copy_bytes": 2 << 30,
            "budget_s": 330.0,
        }
        prefill_chunk = 8192
    else:
        # Tiny matmuls gain nothing from threads, and OpenMP spin-waits badly when the cores are shared.
        torch.set_num_threads(1)
        settings = {
            "config": tiny_config(),
            "device": "cpu",
            "dtype": torch.float32,
            "batches": (1, 4),
            "ks": (2, 4, 8),
            "dynamic_k_max": 8,
            "prompt_tokens": 16,
            "new_tokens": 8,
            "prefill_lengths": (256, 1024, 2048 - 8),  # YaRN ×4 over a 512-token native window
            "yarn_factor": 4.0,
            "long_new_tokens": 400,
            "copy_bytes": 32 << 20,
            "budget_s": 60.0,
        }
        prefill_chunk = None
    for name in ("prompt_tokens", "new_tokens", "long_new_tokens", "budget_s"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    options = DecodeOptions(
        static_cache=args.static_cache,
        compile=args.compile,
        prefill_chunk=args.prefill_chunk if args.prefill_chunk is not None else prefill_chunk,
    )
    report = run_bench(
        **settings,
        repeats=args.repeats,
        options=options,
        experts_implementation=args.experts_implementation,
        compare_vllm=args.compare_vllm,
        save=(lambda partial: args.out.write_text(json.dumps(partial, indent=2)))
        if args.out
        else lambda _: None,
    )
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
