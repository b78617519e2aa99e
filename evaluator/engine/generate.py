"""Batched generation for one arm (a depth policy and a context configuration) of a loaded model.

Requests are grouped by the expert depth they resolve to, batched longest first with left padding, and each
batch runs the engine's decoding loop (decode.py) with a fresh KV cache, under `apply_depth` and
`apply_context`. Greedy outputs are token-identical to generating each prompt alone. A sampled output depends
only on its (prompt, seed, arm): every row draws from its own random stream, whatever else is in its batch and
however the job is chunked, split after running out of memory, or retried. Identical work runs once: requests
sharing a prompt (and, when sampling, a seed) get the same Result under their own keys, so greedy prompts cost
one generation however many seeds an experiment lists. On a GPU, batch sizes are planned from the KV cache
each row needs and the free memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, cast

from .context import ContextConfig, apply_context, input_limit, window
from .decode import DecodeOptions, decode
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
    new_tokens / seconds (one stream's decoding speed); first_token_seconds is the batch's prefill and first
    token. new_tokens counts an end-of-sequence token; text omits it. mean_active_experts is the depth the
    routers chose per token (averaged over tokens and MoE layers); compute_experts_per_token is the expert
    slots really computed per token: the same under the engine's experts implementation, k_max per token for
    a dynamic arm under implementations that compute dropped slots. The cost of an output is the latter.
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
    compute_experts_per_token: float | None = None
    first_token_seconds: float = 0.0


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


@dataclass
class _Job:
    """One distinct generation: prompt tokens and seed, and the requests (by index) that get its Result."""

    ids: list[int]
    seed: int
    indices: list[int] = field(default_factory=list)


def _run_batch(
    loaded: LoadedModel, batch: list[_Job], sampling: Sampling, options: DecodeOptions, k: int | None
) -> list[Result]:
    """Results in batch order, keyed None (the caller gives each request its own key)."""
    from .tracing import RoutingTrace

    with RoutingTrace(loaded) as trace:
        decoded = decode(
            loaded,
            [job.ids for job in batch],
            sampling=sampling,
            seeds=[job.seed for job in batch],
            options=options,
        )
    seconds = decoded.seconds
    results = []
    for row, (job, tokens) in enumerate(zip(batch, decoded.tokens, strict=True)):
        routing = trace.summary(row)
        results.append(
            Result(
                key=None,
                text=loaded.tokenizer.decode(tokens, skip_special_tokens=True),
                prompt_tokens=len(job.ids),
                new_tokens=len(tokens),
                seconds=seconds,
                tokens_per_s=len(tokens) / seconds if seconds > 0 else 0.0,
                routing=routing,
                mean_active_experts=routing["mean_active_experts"],
                depth_k=k,
                error=None,
                token_ids=tuple(tokens),
                compute_experts_per_token=routing["compute_experts_per_token"],
                first_token_seconds=decoded.first_token_seconds,
            )
        )
    return results


def _free_accelerator_memory(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def _run_splitting(
    loaded: LoadedModel, batch: list[_Job], sampling: Sampling, options: DecodeOptions, k: int | None
) -> list[Result]:
    """Run a batch; out of memory, retry it as two halves, down to single prompts that then fail alone."""
    import torch

    try:
        return _run_batch(loaded, batch, sampling, options, k)
    except torch.OutOfMemoryError as exc:
        message = str(exc).splitlines()[0] if str(exc) else "out of memory"
    # Outside the except block, so the exception's frames (and their tensors) are released before retrying.
    _free_accelerator_memory(loaded.device)
    if len(batch) == 1:
        return [
            Result(
                None,
                "",
                len(batch[0].ids),
                0,
                0.0,
                0.0,
                None,
                None,
                k,
                f"Out of memory even for this prompt alone: {message}",
            )
        ]
    half = len(batch) // 2
    return _run_splitting(loaded, batch[:half], sampling, options, k) + _run_splitting(
        loaded, batch[half:], sampling, options, k
    )


def default_options(loaded: LoadedModel) -> DecodeOptions:
    """Long prompts prefill in chunks on an accelerator, so a 128k-token prompt's activations stay small."""
    return DecodeOptions(prefill_chunk=8192 if loaded.device.type == "cuda" else None)


def _planned_size(
    loaded: LoadedModel, requested: int, width: int, sampling: Sampling, options: DecodeOptions, slots: int
) -> int:
    """Rows that fit on the GPU for prompts up to width tokens (the CPU is not planned: requested)."""
    if loaded.device.type != "cuda":
        return requested
    import torch

    from .memory import activation_bytes_per_token, kv_bytes_per_token, plan_batch_size

    free, _ = torch.cuda.mem_get_info(loaded.device)
    # Blocks PyTorch's allocator holds but does not use are free to this process too.
    free += torch.cuda.memory_reserved(loaded.device) - torch.cuda.memory_allocated(loaded.device)
    config, element_size = loaded.model.config, loaded.dtype.itemsize
    return plan_batch_size(
        requested=requested,
        free_bytes=free,
        kv_bytes_per_token=kv_bytes_per_token(config, element_size),
        tokens_per_row=width + sampling.max_new_tokens,
        prefill_tokens=min(width, options.prefill_chunk or width),
        activation_bytes_per_token=activation_bytes_per_token(config, element_size, slots),
    )


def _batches(
    loaded: LoadedModel,
    jobs: list[_Job],
    *,
    batch_size: int,
    sampling: Sampling,
    options: DecodeOptions,
    slots: int,
) -> Iterator[list[_Job]]:
    # Longest first, so each batch holds prompts of similar length and little padding; each batch is planned
    # for its longest prompt.
    jobs = sorted(jobs, key=lambda job: (-len(job.ids), job.indices[0]))
    start = 0
    while start < len(jobs):
        size = _planned_size(loaded, batch_size, len(jobs[start].ids), sampling, options, slots)
        yield jobs[start : start + size]
        start += size


def generate_arm(
    loaded: LoadedModel,
    *,
    requests: Sequence[Request],
    depth: DepthPolicy,
    context: ContextConfig,
    sampling: Sampling,
    batch_size: int = 16,
    options: DecodeOptions | None = None,
) -> list[Result]:
    """Generate every request under one arm; results come back in request order, failures as error Results.

    Requests with the same prompt (and the same seed, when sampling) share one generation: each gets its own
    copy of the Result, under its own key.
    """
    architecture = loaded.architecture
    depth.validate(architecture.num_experts)
    context.validate(architecture)
    sampling.validate()
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if loaded.tokenizer is None:
        raise ValueError("generate_arm needs a LoadedModel with a tokenizer")
    options = options or default_options(loaded)

    encoded = _encode(loaded.tokenizer, [request.prompt for request in requests])
    limit = input_limit(architecture, context, sampling.max_new_tokens)
    results: list[Result | None] = [None] * len(requests)
    work: dict[int | None, dict[tuple, _Job]] = {}
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
            # Greedy output does not depend on the seed: one job per prompt serves every seed.
            identity = (tuple(encoded[index]), request.seed if sampling.do_sample else None)
            job = work.setdefault(k, {}).setdefault(identity, _Job(encoded[index], request.seed))
            job.indices.append(index)

    with apply_context(loaded, context):
        for k, jobs in work.items():
            slots = k if k is not None else int(depth.k_max)  # type: ignore[arg-type]
            with apply_depth(loaded, k=k, dynamic=depth if k is None else None):
                for batch in _batches(
                    loaded,
                    list(jobs.values()),
                    batch_size=batch_size,
                    sampling=sampling,
                    options=options,
                    slots=slots,
                ):
                    for job, result in zip(
                        batch, _run_splitting(loaded, batch, sampling, options, k), strict=True
                    ):
                        for index in job.indices:
                            results[index] = replace(result, key=requests[index].key)
    return cast(list[Result], results)  # every slot is filled: refused above or generated
