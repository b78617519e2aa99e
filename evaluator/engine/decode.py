"""The decoding loop for one batch: prefill, then a token per step, each row drawn from its own stream.

The engine runs this loop instead of `model.generate` for two reasons. A sample must not depend on the rows
beside it (generate draws every row from one global stream, so the same prompt and seed gave another text in
another batch, after an out-of-memory split, or on a retry); here each row has a `torch.Generator` seeded from
its own (seed, prompt) and takes one draw of the vocabulary per step, whatever else runs. And on accelerators
generate swaps grouped experts for batched_mm while decoding, which this loop never does.

Tokens are chosen as transformers' processors choose them, in their order (repetition penalty, min_new_tokens,
temperature, top-k, top-p), so a greedy row equals `generate` on the prompt alone. A sampled row takes
argmax(p / E) with E ~ Exp(1) from its generator: an exact draw from p (the exponential race vLLM samples
with).
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .generate import Sampling
    from .loading import LoadedModel

# torch is imported inside functions, as everywhere in the engine's modules that the web process may read.


@dataclass(frozen=True)
class DecodeOptions:
    """How a batch is decoded; the defaults are what the CPU and the tests run.

    static_cache: a preallocated KV cache of the batch's full length instead of one grown per step.
    compile: decoding steps through torch.compile (guards recompile once per arm: top_k is a plain int).
    prefill_chunk: prompt columns per prefill forward (bounds activation memory on long prompts; None: all).
    stop_check_every: steps between checks that every row has ended; each check waits for the device, so on an
    accelerator checking every step would stop the host from queueing the next step (None: 1 on the CPU, 8
    elsewhere). Steps past the end are trimmed, never returned.
    """

    static_cache: bool = False
    compile: bool = False
    prefill_chunk: int | None = None
    stop_check_every: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "static_cache": self.static_cache,
            "compile": self.compile,
            "prefill_chunk": self.prefill_chunk,
            "stop_check_every": self.stop_check_every,
        }


@dataclass
class Decoded:
    """A batch's new tokens per row (up to and including the first end-of-sequence token) and its timings."""

    tokens: list[list[int]]
    seconds: float
    first_token_seconds: float


def stream_seed(seed: int, token_ids: Sequence[int]) -> int:
    """The seed of a row's random stream: a function of (seed, prompt tokens) only, stable across processes.

    Every arm of an experiment draws the same stream for a (prompt, seed): common random numbers, so two arms
    differ by their depth and context, not by luck of the draw.
    """
    digest = hashlib.sha256(f"{int(seed)}:{','.join(map(str, token_ids))}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def _cache_keyword(model: Any) -> str:
    # transformers 5.24 renamed past_key_values to cache (the old name warns); 5.17 knows only the old one.
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _new_cache(loaded: LoadedModel, length: int, options: DecodeOptions) -> Any:
    from transformers import DynamicCache, StaticCache

    config = loaded.model.config
    if options.static_cache:
        return StaticCache(config=config, max_cache_len=length)
    return DynamicCache(config=config)


def _forward(
    model: Any,
    cache_keyword: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Any,
) -> torch.Tensor:
    """Float32 logits of each row's last position (the only ones computed), the cache extended in place."""
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=1,
        **{cache_keyword: cache},
    )
    return output.logits[:, -1, :].float()


def _step_function(loaded: LoadedModel, options: DecodeOptions) -> Callable:
    if not options.compile:
        return _forward
    if "decode" not in loaded.compiled_steps:
        import torch

        # One graph per arm and batch shape: leave room for many arms before falling back to eager.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        # The attention mask grows a column per step: dynamic shapes, so one graph serves every step.
        loaded.compiled_steps["decode"] = torch.compile(_forward, dynamic=True)
    return loaded.compiled_steps["decode"]


def _prefill_spans(width: int, chunk: int | None) -> list[tuple[int, int]]:
    """Column spans of the prefill; never a last span of one column, which tracing would take for decoding."""
    if not chunk or chunk >= width:
        return [(0, width)]
    spans = [(start, min(start + chunk, width)) for start in range(0, width, chunk)]
    if spans[-1][1] - spans[-1][0] == 1:
        spans[-2:] = [(spans[-2][0], width)]
    return spans


def choose_tokens(
    logits: torch.Tensor,
    *,
    sampling: Sampling,
    new_tokens: int,
    seen: torch.Tensor | None,
    eos: torch.Tensor,
    generators: Sequence[torch.Generator] | None,
) -> torch.Tensor:
    """Every row's next token from its float32 logits [rows, vocab], transformers' processors in order."""
    import torch

    scores = logits
    if seen is not None:  # repetition penalty over the row's real tokens so far (prompt and output)
        penalty = sampling.repetition_penalty
        scores = torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty), scores)
    if new_tokens < sampling.min_new_tokens and eos.numel():
        scores = scores.index_fill(-1, eos, float("-inf"))
    if generators is None:
        return scores.argmax(-1)
    if sampling.temperature != 1.0:
        scores = scores / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(scores, min(sampling.top_k, scores.size(-1))).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=False)
        drop = ordered.softmax(-1).cumsum(-1) <= (1 - sampling.top_p)
        drop[..., -1:] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = scores.softmax(-1)
    noise = torch.stack(
        [torch.empty_like(probs[0]).exponential_(generator=generator) for generator in generators]
    )
    return (probs / noise).argmax(-1)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def decode(
    loaded: LoadedModel,
    rows: Sequence[Sequence[int]],
    *,
    sampling: Sampling,
    seeds: Sequence[int] | None = None,
    options: DecodeOptions | None = None,
) -> Decoded:
    """Generate for a batch of prompt token lists (left padded here); seeds[i] seeds row i's stream."""
    import torch

    options = options or DecodeOptions()
    device, model = loaded.device, loaded.model
    count, width = len(rows), max(len(ids) for ids in rows)
    pad = loaded.pad_token_id if loaded.pad_token_id is not None else 0
    input_ids = torch.full((count, width), pad, dtype=torch.long)
    mask = torch.zeros((count, width), dtype=torch.long)
    for row, ids in enumerate(rows):
        # Left padding: every row's last prompt token sits in the last column, where decoding continues.
        input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate derives them from the mask
    eos = torch.tensor(list(loaded.eos_token_ids), dtype=torch.long, device=device)
    generators = None
    if sampling.do_sample:
        if seeds is None or len(seeds) != count:
            raise ValueError("Sampling needs one seed per row")
        generators = [
            torch.Generator(device=device).manual_seed(stream_seed(seed, ids))
            for seed, ids in zip(seeds, rows, strict=True)
        ]
    seen = None
    if sampling.repetition_penalty != 1.0:
        vocab = model.get_output_embeddings().weight.shape[0]
        seen = torch.zeros((count, vocab), dtype=torch.bool, device=device)
        seen.scatter_(1, input_ids, mask.bool())  # pads do not count: a row's penalty ignores its batch

    keyword = _cache_keyword(model)
    cache = _new_cache(loaded, width + sampling.max_new_tokens, options)
    step = _step_function(loaded, options)
    check_every = options.stop_check_every or (1 if device.type == "cpu" else 8)
    generated = torch.full((count, sampling.max_new_tokens), pad, dtype=torch.long, device=device)
    finished = torch.zeros(count, dtype=torch.bool, device=device)
    with torch.inference_mode():
        _synchronize(device)
        started = time.perf_counter()
        for start, end in _prefill_spans(width, options.prefill_chunk):
            logits = _forward(
                model, keyword, input_ids[:, start:end], mask[:, :end], positions[:, start:end], cache
            )
        first_token_seconds = 0.0
        for index in range(sampling.max_new_tokens):
            token = choose_tokens(
                logits, sampling=sampling, new_tokens=index, seen=seen, eos=eos, generators=generators
            )
            token = torch.where(finished, pad, token)  # what generate feeds an ended row
            generated[:, index] = token
            if index == 0:
                _synchronize(device)
                first_token_seconds = time.perf_counter() - started
            finished |= torch.isin(token, eos)
            if seen is not None:
                seen.scatter_(1, token[:, None], True)
            if index + 1 == sampling.max_new_tokens or (
                (index + 1) % check_every == 0 and bool(finished.all())
            ):
                break
            mask = torch.cat([mask, mask.new_ones((count, 1))], dim=-1)
            positions = positions[:, -1:] + 1
            logits = step(model, keyword, token[:, None], mask, positions, cache)
        tokens = generated[:, : index + 1].tolist()  # the host copy waits for the device: timing is complete
        seconds = time.perf_counter() - started
    eos_ids = set(loaded.eos_token_ids)
    trimmed = [
        row[: next((at + 1 for at, token in enumerate(row) if token in eos_ids), len(row))] for row in tokens
    ]
    return Decoded(tokens=trimmed, seconds=seconds, first_token_seconds=first_token_seconds)
