"""Batched generation for one arm (a depth policy and a context configuration) of a loaded model.

Requests are grouped by the expert depth they resolve to and by seed, batched with left padding, and each
batch runs one `model.generate` call with a fresh KV cache, under `apply_depth` and `apply_context`. Greedy
outputs are token-identical to generating each prompt alone. Sampling is reproducible: every batch seeds the
random generator from its (single) seed, so the same requests, seeds and batch composition give the same texts
(a batch split after running out of memory has another composition, hence possibly other samples).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, cast

from .context import ContextConfig, apply_context, input_limit, window
from .depth import DepthPolicy, apply_depth

if TYPE_CHECKING:
    import torch

    from .loading import LoadedModel

# torch is imported inside the functions that run a model: the web process reads Sampling, Result and
# prompt_token_counts from here and should not load torch for them.


@dataclass
class Sampling:
    """Decoding parameters shared by all arms of an experiment (min_new_tokens > 0 suppresses early stops)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sampling:
        kinds = {f.name: type(f.default) for f in fields(cls)}  # every field's default has its type
        unknown = set(data) - set(kinds)
        if unknown:
            raise ValueError(f"Unknown sampling keys {sorted(unknown)}: use {', '.join(sorted(kinds))}")
        for name, value in data.items():
            kind = kinds[name]
            if isinstance(value, bool) != (kind is bool) or not isinstance(
                value, int if kind is int else kind | int
            ):
                raise ValueError(f"Sampling {name} must be {kind.__name__}, got {value!r}")
        sampling = cls(**data)
        sampling.validate()
        return sampling

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        if not self.max_new_tokens >= 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be between 0 and max_new_tokens, got {self.min_new_tokens}"
            )
        if self.temperature <= 0:
            raise ValueError(
                f"temperature must be above 0 (use do_sample=false for greedy), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or positive, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be above 0 (1 is off), got {self.repetition_penalty}")


@dataclass
class Request:
    """One prompt to generate for, with its seed and the labels that depth policies read."""

    key: Any
    prompt: str
    seed: int
    category: str = ""
    tags: tuple = ()


@dataclass
class Result:
    """The outcome for one Request: text and cost, or an error (then text is empty).

    seconds is the wall time of the batch that produced it (what this prompt waited); tokens_per_s is
    new_tokens / seconds (one stream's decoding speed). new_tokens counts an end-of-sequence token; text
    omits it.
    """

    key: Any
    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    tokens_per_s: float
    routing: dict | None
    mean_active_experts: float | None
    depth_k: int | None
    error: str | None
    token_ids: tuple[int, ...] = ()


def _encode(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    if not prompts:
        return []
    return [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]


def prompt_token_counts(tokenizer: Any, prompts: Sequence[str]) -> list[int]:
    """Tokens each prompt uses, counted as generate_arm counts them (to check limits before scheduling)."""
    return [len(ids) for ids in _encode(tokenizer, prompts)]


def _failed(request: Request, prompt_tokens: int, k: int | None, error: str) -> Result:
    return Result(request.key, "", prompt_tokens, 0, 0.0, 0.0, None, None, k, error)


def _generation_config(loaded: LoadedModel, sampling: Sampling) -> Any:
    from transformers import GenerationConfig

    options: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "do_sample": sampling.do_sample,
        "repetition_penalty": sampling.repetition_penalty,
        "pad_token_id": loaded.pad_token_id,
        "eos_token_id": list(loaded.eos_token_ids) or None,
    }
    if sampling.min_new_tokens:
        options["min_new_tokens"] = sampling.min_new_tokens
    if sampling.do_sample:
        # Explicit values: unset ones would come from the checkpoint's generation_config.json (e.g. top_k=20).
        options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    return GenerationConfig(**options)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators for one batch without disturbing the process's random state."""
    import torch

    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed) % 2**63)
        yield


def _run_batch(
    loaded: LoadedModel,
    batch: list[tuple[Request, list[int]]],
    seed: int,
    generation_config: Any,
    k: int | None,
) -> list[Result]:
    import torch

    from .tracing import RoutingTrace

    width = max(len(ids) for _, ids in batch)
    input_ids = torch.full((len(batch), width), loaded.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (_, ids) in enumerate(batch):
        # Left padding: every row's last prompt token sits in the last column, where decoding continues.
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    eos = set(loaded.eos_token_ids)
    with _seeded(seed, loaded.device), RoutingTrace(loaded) as trace:
        started = time.perf_counter()
        output = loaded.model.generate(
            input_ids.to(loaded.device),
            attention_mask=attention.to(loaded.device),
            generation_config=generation_config,
        )
        generated = output[:, width:].cpu().tolist()  # the host copy waits for the device: timing is complete
        seconds = time.perf_counter() - started
    results = []
    for row, ((request, ids), tokens) in enumerate(zip(batch, generated, strict=True)):
        end = next((index + 1 for index, token in enumerate(tokens) if token in eos), len(tokens))
        tokens = tokens[:end]
        routing = trace.summary(row)
        results.append(
            Result(
                key=request.key,
                text=loaded.tokenizer.decode(tokens, skip_special_tokens=True),
                prompt_tokens=len(ids),
                new_tokens=len(tokens),
                seconds=seconds,
                tokens_per_s=len(tokens) / seconds if seconds > 0 else 0.0,
                routing=routing,
                mean_active_experts=routing["mean_active_experts"],
                depth_k=k,
                error=None,
                token_ids=tuple(tokens),
            )
        )
    return results


def _free_accelerator_memory(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def _run_splitting(
    loaded: LoadedModel,
    batch: list[tuple[Request, list[int]]],
    seed: int,
    generation_config: Any,
    k: int | None,
) -> list[Result]:
    """Run a batch; out of memory, retry it as two halves, down to single prompts that then fail alone."""
    import torch

    try:
        return _run_batch(loaded, batch, seed, generation_config, k)
    except torch.OutOfMemoryError as exc:
        message = str(exc).splitlines()[0] if str(exc) else "out of memory"
    # Outside the except block, so the exception's frames (and their tensors) are released before retrying.
    _free_accelerator_memory(loaded.device)
    if len(batch) == 1:
        request, ids = batch[0]
        return [_failed(request, len(ids), k, f"Out of memory even for this prompt alone: {message}")]
    half = len(batch) // 2
    return _run_splitting(loaded, batch[:half], seed, generation_config, k) + _run_splitting(
        loaded, batch[half:], seed, generation_config, k
    )


def generate_arm(
    loaded: LoadedModel,
    *,
    requests: Sequence[Request],
    depth: DepthPolicy,
    context: ContextConfig,
    sampling: Sampling,
    batch_size: int = 16,
) -> list[Result]:
    """Generate every request under one arm; results come back in request order, failures as error Results."""
    architecture = loaded.architecture
    depth.validate(architecture.num_experts)
    context.validate(architecture)
    sampling.validate()
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if loaded.tokenizer is None:
        raise ValueError("generate_arm needs a LoadedModel with a tokenizer")

    encoded = _encode(loaded.tokenizer, [request.prompt for request in requests])
    limit = input_limit(architecture, context, sampling.max_new_tokens)
    results: list[Result | None] = [None] * len(requests)
    groups: dict[tuple[int | None, int], list[int]] = {}
    for index, request in enumerate(requests):
        k = depth.k_for(request.category, list(request.tags))
        count = len(encoded[index])
        if count == 0:
            results[index] = _failed(request, 0, k, "The prompt is empty once tokenized")
        elif count > limit:
            results[index] = _failed(
                request,
                count,
                k,
                f"The prompt has {count:,} tokens but this arm accepts at most {limit:,} "
                f"({context.describe()}: window {window(architecture, context):,} tokens, "
                f"{sampling.max_new_tokens} kept for generation); it was not truncated",
            )
        else:
            groups.setdefault((k, request.seed), []).append(index)

    generation_config = _generation_config(loaded, sampling)
    with apply_context(loaded, context):
        for (k, seed), indices in groups.items():
            # Longest first, so each batch holds prompts of similar length and little padding.
            indices.sort(key=lambda index: (-len(encoded[index]), index))
            with apply_depth(loaded, k=k, dynamic=depth if k is None else None):
                for start in range(0, len(indices), batch_size):
                    chunk = indices[start : start + batch_size]
                    batch = [(requests[index], encoded[index]) for index in chunk]
                    for index, result in zip(
                        chunk, _run_splitting(loaded, batch, seed, generation_config, k), strict=True
                    ):
                        results[index] = result
    return cast(list[Result], results)  # every slot is filled: refused above or generated
