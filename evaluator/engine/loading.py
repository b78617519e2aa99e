"""Load an unquantized Mixture-of-Experts checkpoint once per process; find its routers and rotary modules.

Everything here is pure PyTorch + transformers (no Django): the GPU worker and the benchmark use it as is.
`inspect_checkpoint` reads config.json (and the few-kilobyte safetensors headers) without touching weights, so
the web process can check a checkpoint before scheduling anything.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported where a model is loaded, not here: the web process describes arms and checks checkpoints
# with this module and should not pay torch's import time and ~250 MB for it.
DTYPE_NAMES = ("bf16", "fp16", "fp32")


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


# config.json spells dtypes as torch names; these are the only ones we accept for weights.
_ALLOWED_CONFIG_DTYPES = {"bfloat16", "float16", "float32", "bf16", "fp16", "fp32", "half", "float"}
# safetensors dtype tags that only appear in quantized checkpoints (packed ints, fp8, fp4).
_QUANTIZED_SAFETENSORS_DTYPES = {
    "I8",
    "U8",
    "I4",
    "U4",
    "F8_E4M3",
    "F8_E5M2",
    "F8_E8M0",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
}


class CheckpointError(ValueError):
    """A checkpoint folder that Depth Arena cannot use, with a message that says why and what would work."""


@dataclass(frozen=True)
class _Family:
    """How one transformers MoE family exposes its routers (all read `router.top_k` at forward time)."""

    router_class: str
    # Which decoder layers are MoE layers, from the raw config.json dict and the layer index.
    is_moe_layer: Callable[[dict[str, Any], int], bool]


def _qwen_moe_layer(config: dict[str, Any], index: int) -> bool:
    # Qwen2/3-MoE can interleave dense layers: `mlp_only_layers` and `decoder_sparse_step` decide.
    step = int(config.get("decoder_sparse_step") or 1)
    return index not in (config.get("mlp_only_layers") or []) and (index + 1) % step == 0


def _every_layer(config: dict[str, Any], index: int) -> bool:
    return True


# Families whose transformers 5 router is a `*TopKRouter` module with a `top_k` attribute read in forward().
FAMILIES: dict[str, _Family] = {
    "qwen3_moe": _Family("Qwen3MoeTopKRouter", _qwen_moe_layer),
    "qwen2_moe": _Family("Qwen2MoeTopKRouter", _qwen_moe_layer),
    "olmoe": _Family("OlmoeTopKRouter", _every_layer),
    "mixtral": _Family("MixtralTopKRouter", _every_layer),
}


@dataclass(frozen=True)
class Architecture:
    """What the engine and the scheduler need to know about a checkpoint, read from its config.json."""

    family: str
    num_layers: int
    num_moe_layers: int
    num_experts: int
    default_top_k: int
    native_context: int
    max_position_embeddings: int
    hidden_size: int
    vocab_size: int
    rope_theta: float
    rope_type: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RotarySlot:
    """Where a rotary-embedding module lives (parent.<name>): an arm swaps it and puts the original back."""

    parent: nn.Module = field(repr=False)
    name: str
    module: nn.Module


@dataclass(eq=False)
class LoadedModel:
    """A model loaded once, plus the handles the engine switches arms with (routers and rotary modules)."""

    path: str
    model: nn.Module = field(repr=False)
    tokenizer: Any = field(repr=False)
    architecture: Architecture
    routers: list[nn.Module] = field(repr=False)
    rotaries: list[RotarySlot] = field(repr=False)
    device: torch.device
    dtype: torch.dtype
    load_seconds: float
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    # Rotary modules built for context configurations, keyed by (kind, factor): a switch then costs a setattr.
    rotary_cache: dict[tuple[str, float], list[nn.Module]] = field(default_factory=dict, repr=False)
    # Compiled decoding steps (DecodeOptions.compile), keyed by option; guards recompile them once per arm.
    compiled_steps: dict[str, Callable] = field(default_factory=dict, repr=False)

    @property
    def experts_implementation(self) -> str:
        return str(getattr(self.model.config, "_experts_implementation", None) or "eager")


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"Checkpoint folder not found: {path}")
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a folder: give the folder that holds config.json and the weights"
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"No config.json in {path}: expected a Hugging Face checkpoint folder "
            "(config.json, weights, tokenizer)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_file} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file} does not hold a JSON object")
    # Multimodal wrappers keep the language model's settings in text_config.
    if isinstance(config.get("text_config"), dict) and "num_hidden_layers" not in config:
        config = {**config["text_config"], "quantization_config": config.get("quantization_config")}
    return config


def _safetensors_dtypes(path: Path) -> set[str]:
    """Weight dtypes named in the safetensors headers (a few kilobytes each, no weights are read)."""
    found: set[str] = set()
    for file in sorted(path.glob("*.safetensors")):
        try:
            with file.open("rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                if size > 100_000_000:  # a corrupt header; from_pretrained will report the file properly
                    continue
                header = json.loads(handle.read(size))
        except (OSError, struct.error, ValueError):
            continue
        found.update(
            entry["dtype"]
            for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict)
        )
    return found


def _refuse_quantized(path: Path, config: dict[str, Any]) -> None:
    why = (
        "Depth Arena compares expert depths of the unquantized model, so only bf16, fp16 or fp32 weights are "
        "accepted; point it at the original (unquantized) checkpoint"
    )
    quantization = config.get("quantization_config")
    if quantization:
        method = (
            quantization.get("quant_method", "unknown method")
            if isinstance(quantization, dict)
            else "unknown"
        )
        raise CheckpointError(
            f"Quantized checkpoint refused ({method}, quantization_config in config.json): {why}"
        )
    declared = config.get("dtype", config.get("torch_dtype"))
    if isinstance(declared, str) and declared.removeprefix("torch.") not in _ALLOWED_CONFIG_DTYPES:
        raise CheckpointError(f"Checkpoint weights are {declared} according to config.json: {why}")
    quantized = _safetensors_dtypes(path) & _QUANTIZED_SAFETENSORS_DTYPES
    if quantized:
        raise CheckpointError(f"Checkpoint holds {', '.join(sorted(quantized))} weights (quantized): {why}")


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    # transformers 5 writes rope_parameters (rope_theta inside); older files: rope_theta + rope_scaling.
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return rope if isinstance(rope, dict) else {}


def _num_experts(config: dict[str, Any]) -> Any:
    return config.get("num_experts") or config.get("num_local_experts") or config.get("n_routed_experts")


def _architecture_from_dict(config: dict[str, Any]) -> Architecture:
    """Architecture from a config dict (raw config.json or a loaded model's config.to_dict())."""
    model_type = str(config.get("model_type", "unknown"))
    num_experts = _num_experts(config)
    top_k = config.get("num_experts_per_tok")
    if not isinstance(num_experts, int) or num_experts < 2 or not isinstance(top_k, int):
        raise CheckpointError(
            f"model_type {model_type!r} is not a Mixture-of-Experts model (config.json has no num_experts "
            "and num_experts_per_tok): expert depth only exists for MoE checkpoints such as Qwen3-30B-A3B"
        )
    family = FAMILIES.get(model_type)
    if family is None:
        raise CheckpointError(
            f"Mixture-of-Experts family {model_type!r} is not supported; "
            f"supported: {', '.join(sorted(FAMILIES))}"
        )
    num_layers = int(config.get("num_hidden_layers", 0))
    max_positions = int(config.get("max_position_embeddings", 0))
    rope = _rope(config)
    rope_type = str(rope.get("rope_type", rope.get("type", "default")))
    native = max_positions
    if rope_type == "yarn":
        # A YaRN-configured checkpoint's own window is the pretraining one.
        native = int(rope.get("original_max_position_embeddings") or max_positions)
    return Architecture(
        family=model_type,
        num_layers=num_layers,
        num_moe_layers=sum(family.is_moe_layer(config, index) for index in range(num_layers)),
        num_experts=num_experts,
        default_top_k=top_k,
        native_context=native,
        max_position_embeddings=max_positions,
        hidden_size=int(config.get("hidden_size", 0)),
        vocab_size=int(config.get("vocab_size", 0)),
        rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        rope_type=rope_type,
    )


def inspect_checkpoint(path: str | Path) -> Architecture:
    """Describe a checkpoint from its config.json, or raise CheckpointError saying why it cannot be used."""
    folder = Path(path).expanduser()
    config = _read_config(folder)
    _refuse_quantized(folder, config)
    return _architecture_from_dict(config)


def _find_routers(model: nn.Module, architecture: Architecture) -> list[nn.Module]:
    router_class = FAMILIES[architecture.family].router_class
    routers = [module for module in model.modules() if type(module).__name__ == router_class]
    if not routers or not all(isinstance(getattr(router, "top_k", None), int) for router in routers):
        raise CheckpointError(
            f"No {router_class} modules with a top_k attribute in the loaded model: this engine needs "
            "transformers >= 5.17, whose MoE routers read top_k at forward time"
        )
    if len(routers) != architecture.num_moe_layers:
        raise CheckpointError(
            f"Found {len(routers)} routers but config.json describes {architecture.num_moe_layers} MoE layers"
        )
    return routers


def _find_rotaries(model: nn.Module) -> list[RotarySlot]:
    slots = [
        RotarySlot(parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child).__name__.endswith("RotaryEmbedding")
    ]
    if not slots:
        raise CheckpointError("No rotary-embedding module found: context configurations cannot be applied")
    return slots


def wrap_model(
    model: nn.Module, tokenizer: Any = None, *, path: str = "", load_seconds: float = 0.0
) -> LoadedModel:
    """Build the LoadedModel handles for a model already in memory (the benchmark's random-weight model).

    A model on transformers' grouped experts switches to the engine's (see experts.py): the same logits,
    grouped while decoding too, and dropped slots not computed.
    """
    from .experts import use_grouped_experts

    use_grouped_experts(model)
    architecture = _architecture_from_dict(model.config.to_dict())
    eos_ids: list[int] = []
    for source in (getattr(model, "generation_config", None), tokenizer, model.config):
        value = getattr(source, "eos_token_id", None)
        for token in value if isinstance(value, list | tuple) else [value]:
            if isinstance(token, int) and token not in eos_ids:
                eos_ids.append(token)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else (eos_ids or [0])[0]
    embeddings = model.get_input_embeddings().weight
    return LoadedModel(
        path=path,
        model=model,
        tokenizer=tokenizer,
        architecture=architecture,
        routers=_find_routers(model, architecture),
        rotaries=_find_rotaries(model),
        device=embeddings.device,
        dtype=embeddings.dtype,
        load_seconds=load_seconds,
        eos_token_ids=tuple(eos_ids),
        pad_token_id=pad,
    )


def resolve_device(device: str | None) -> str:
    """None means the first GPU when there is one, else the CPU (checked at call time, never at import)."""
    if device is None:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """The dtype name to load with: "auto" is bf16 on an accelerator, fp32 on the CPU (slow bf16 matmuls)."""
    if dtype == "auto":
        return "fp32" if device == "cpu" else "bf16"
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPE_NAMES)}; got {dtype!r}")
    return dtype


def load_checkpoint(path: str | Path, *, dtype: str = "auto", device: str | None = None) -> LoadedModel:
    """Load model and tokenizer (left padding, pad token set); refuse anything but an unquantized MoE."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path).expanduser().resolve()
    inspect_checkpoint(folder)  # refuses missing, dense and quantized checkpoints before any weight is read
    device_name = resolve_device(device)
    dtype_name = resolve_dtype(dtype, device_name)
    started = time.perf_counter()
    options: dict[str, Any] = {"dtype": torch_dtype(dtype_name), "local_files_only": True}
    if device_name != "cpu":
        # Load straight onto the accelerator ("auto" spreads a model too large for one card over several).
        options["device_map"] = device_name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **options).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left", local_files_only=True)
    except (OSError, ValueError) as exc:  # missing weights or tokenizer files, unreadable shards
        raise CheckpointError(f"Could not load {folder}: {exc}") from exc
    for name, parameter in model.named_parameters():
        # Some models keep a few modules in fp32 on purpose; packed ints and 8-bit floats mean quantization.
        if not parameter.dtype.is_floating_point or parameter.dtype.itemsize < 2:
            raise CheckpointError(f"Parameter {name} loaded as {parameter.dtype}: refusing a quantized model")
    if tokenizer.pad_token is None:
        # Left-padded batches need a pad id; generation masks it out, so eos (or unk) is a safe stand-in.
        stand_in = tokenizer.eos_token or tokenizer.unk_token
        if stand_in is None:
            raise CheckpointError(
                "The tokenizer has no pad, eos or unk token: batched generation needs a pad token"
            )
        tokenizer.pad_token = stand_in
    return wrap_model(model, tokenizer, path=str(folder), load_seconds=time.perf_counter() - started)


_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def get_loaded(path: str | Path, *, dtype: str = "auto", device: str | None = None) -> LoadedModel:
    """The process-wide LoadedModel for (path, dtype, device): loaded on first use, then reused."""
    device_name = resolve_device(device)
    key = (str(Path(path).expanduser().resolve()), resolve_dtype(dtype, device_name), device_name)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_checkpoint(key[0], dtype=key[1], device=key[2])
        return _CACHE[key]


def forget_loaded() -> None:
    """Drop every cached model (tests, or a worker asked to free the card)."""
    with _CACHE_LOCK:
        _CACHE.clear()
