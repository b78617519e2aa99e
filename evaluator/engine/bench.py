"""Benchmarks: decode speed against the memory-bandwidth bound, and the batched engine against naive generate.

`python -m evaluator.engine.bench --gpu` builds a model of Qwen3-30B-A3B's exact shape with random bf16
weights directly on the GPU (nothing is downloaded), measures the card's copy bandwidth, and prints JSON:
decode tokens/s at batch 1 and 32 for k = 4, 8, 16, native and YaRN ×4, each beside its bandwidth bound.
`--cpu-small` runs the same code on a tiny configuration on the CPU. Needs only torch and transformers 5.17+.

`bench_engine(path, prompts=...)` compares generate_arm with one-prompt-at-a-time `model.generate` on a real
checkpoint (the lead's Django command wraps it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .context import ContextConfig, apply_context
from .depth import DepthPolicy, apply_depth
from .generate import Request, Sampling, _generation_config, generate_arm
from .loading import DTYPE_NAMES, LoadedModel, get_loaded, load_checkpoint, torch_dtype, wrap_model


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


class _DecodeRouting:
    """Mean distinct experts per layer in a decoding step (what a batch must read), without host syncs."""

    def __init__(self, loaded: LoadedModel, batch: int) -> None:
        self.loaded, self.batch = loaded, batch
        self.distinct = torch.zeros(len(loaded.routers), device=loaded.device)
        self.steps = 0
        self.implementations: set[str] = set()
        self.handles: list[Any] = []

    def __enter__(self) -> _DecodeRouting:
        experts = next(m for m in self.loaded.model.modules() if type(m).__name__.endswith("Experts"))
        self.handles.append(experts.register_forward_pre_hook(self._experts_call))
        for layer, router in enumerate(self.loaded.routers):
            self.handles.append(router.register_forward_hook(self._router_hook(layer)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self.handles:
            handle.remove()

    def _experts_call(self, module: nn.Module, args: tuple) -> None:
        # generate may switch implementations for decoding (grouped_mm → batched_mm on GPUs): record what ran.
        if args and args[0].shape[0] == self.batch:
            self.implementations.add(str(getattr(module.config, "_experts_implementation", None) or "eager"))

    def _router_hook(self, layer: int) -> Callable:
        def hook(router: nn.Module, inputs: tuple, outputs: tuple) -> None:
            indices = outputs[2]
            if indices.shape[0] != self.batch:  # the prefill
                return
            if layer == 0:
                self.steps += 1
            hit = torch.zeros(router.num_experts, device=indices.device).index_fill_(
                0, indices.reshape(-1), 1.0
            )
            self.distinct[layer] += hit.sum()

        return hook

    def per_layer(self) -> list[float]:
        return (self.distinct / max(self.steps, 1)).tolist()


def _bytes_per_step(loaded: LoadedModel, batch: int, context_tokens: float, distinct: Sequence[float]) -> int:
    """Bytes a decoding step reads: every dense weight once, the experts the batch hit, and the KV cache."""
    model, config = loaded.model, loaded.model.config
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings().weight
    expert_parameters: dict[int, int] = {}
    per_layer_expert_bytes = []
    for module in model.modules():
        if type(module).__name__.endswith("Experts") and hasattr(module, "gate_up_proj"):
            parameters = list(module.parameters())
            expert_parameters.update({id(p): p.nbytes for p in parameters})
            per_layer_expert_bytes.append(sum(p.nbytes for p in parameters) / module.num_experts)
    dense = sum(p.nbytes for p in model.parameters() if id(p) not in expert_parameters and p is not embedding)
    if output is embedding:  # tied: the output projection reads the whole matrix anyway
        dense += embedding.nbytes
    embedding_rows = batch * embedding.shape[1] * embedding.element_size()
    experts = sum(n * b for n, b in zip(distinct, per_layer_expert_bytes, strict=True))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_per_token = (
        2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * embedding.element_size()
    )
    return int(dense + embedding_rows + experts + batch * context_tokens * kv_per_token)


def _generate(loaded: LoadedModel, input_ids: torch.Tensor, new_tokens: int) -> float:
    from transformers import GenerationConfig

    # min_new_tokens = max_new_tokens and no eos: every run decodes exactly new_tokens tokens.
    config = GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
    )
    _synchronize(loaded.device)
    started = time.perf_counter()
    loaded.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
    _synchronize(loaded.device)
    return time.perf_counter() - started


def decode_run(
    loaded: LoadedModel,
    *,
    batch: int,
    k: int,
    context: ContextConfig,
    prompt_tokens: int,
    new_tokens: int,
    bandwidth: float,
) -> dict[str, Any]:
    """Decode tokens/s for one (batch, k, context), beside the bound bandwidth / bytes read per step."""
    generator = torch.Generator().manual_seed(batch * 1000 + k)
    input_ids = torch.randint(3, loaded.architecture.vocab_size, (batch, prompt_tokens), generator=generator)
    input_ids = input_ids.to(loaded.device)
    with apply_context(loaded, context), apply_depth(loaded, k=k):
        with _DecodeRouting(loaded, batch) as routing:  # also the warm-up run
            _generate(loaded, input_ids, new_tokens)
        prefill = _generate(loaded, input_ids, 1)
        total = _generate(loaded, input_ids, new_tokens)
    decode_seconds = max(total - prefill, 1e-9)
    tokens_per_s = batch * (new_tokens - 1) / decode_seconds
    distinct = routing.per_layer()
    step_bytes = _bytes_per_step(loaded, batch, prompt_tokens + new_tokens / 2, distinct)
    bound = batch * bandwidth / step_bytes
    return {
        "batch": batch,
        "k": k,
        "context": context.describe(),
        "tokens_per_s": round(tokens_per_s, 2),
        "bound_tokens_per_s": round(bound, 2),
        "fraction_of_bound": round(tokens_per_s / bound, 4),
        "bytes_per_step": step_bytes,
        "distinct_experts_per_layer": round(sum(distinct) / len(distinct), 2),
        "decode_seconds": round(decode_seconds, 4),
        "experts_implementation_decode": sorted(routing.implementations),
    }


def run_decode_bench(
    config: Any,
    *,
    device: str,
    dtype: torch.dtype,
    batches: Sequence[int],
    ks: Sequence[int],
    yarn_factor: float,
    prompt_tokens: int,
    new_tokens: int,
    copy_bytes: int,
    budget_s: float,
    experts_implementation: str | None = None,
) -> dict[str, Any]:
    """Everything `--gpu` and `--cpu-small` print; runs left when budget_s is spent are listed as skipped."""
    import transformers

    started = time.perf_counter()
    loaded = build_random_model(config, device=device, dtype=dtype)
    if experts_implementation:
        loaded.model.set_experts_implementation(experts_implementation)
    bandwidth = copy_bandwidth(loaded.device, nbytes=copy_bytes)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "architecture": loaded.architecture.to_dict(),
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "build_seconds": round(loaded.load_seconds, 2),
        "copy_bandwidth_GBps": round(bandwidth / 1e9, 1),
        "experts_implementation": loaded.experts_implementation,
        "static_cache": False,  # plain generate: no torch.compile, no static cache (not safe across arms)
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "runs": [],
        "skipped": [],
    }
    contexts = [ContextConfig.native(), ContextConfig.yarn(yarn_factor)]
    for batch in batches:
        for k in ks:
            for context in contexts:
                label = {"batch": batch, "k": k, "context": context.describe()}
                if time.perf_counter() - started > budget_s:
                    report["skipped"].append(label)
                    continue
                report["runs"].append(
                    decode_run(
                        loaded,
                        batch=batch,
                        k=k,
                        context=context,
                        prompt_tokens=prompt_tokens,
                        new_tokens=new_tokens,
                        bandwidth=bandwidth,
                    )
                )
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _timed(function: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    _synchronize(device)
    started = time.perf_counter()
    value = function()
    _synchronize(device)
    return value, time.perf_counter() - started


def bench_engine(
    path: str, *, prompts: list[str], max_new_tokens: int = 32, batch_size: int = 16
) -> dict[str, Any]:
    """generate_arm against one-at-a-time model.generate on the same prompts, both forced to equal lengths.

    reload_ms is None on a GPU without room for a second copy of the model.
    """
    loaded = get_loaded(path)
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
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--budget-s", type=float, default=None, help="stop starting runs after this long")
    parser.add_argument(
        "--experts-implementation", choices=["eager", "grouped_mm", "batched_mm"], default=None
    )
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
            "prompt_tokens": 64,
            "new_tokens": 32,
            "copy_bytes": 2 << 30,
            "budget_s": 360.0,
        }
    else:
        # Tiny matmuls gain nothing from threads, and OpenMP spin-waits badly when the cores are shared.
        torch.set_num_threads(1)
        settings = {
            "config": tiny_config(),
            "device": "cpu",
            "dtype": torch.float32,
            "batches": (1, 4),
            "ks": (2, 4, 8),
            "prompt_tokens": 16,
            "new_tokens": 8,
            "copy_bytes": 32 << 20,
            "budget_s": 60.0,
        }
    for name in ("prompt_tokens", "new_tokens", "budget_s"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    report = run_decode_bench(**settings, yarn_factor=4.0, experts_implementation=args.experts_implementation)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
