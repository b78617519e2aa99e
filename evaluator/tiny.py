"""Builds the project's small trained Qwen3-MoE (used by the demo and the tests) from its own corpus.

Pure torch / transformers / tokenizers, no Django: the management command and the tests call it.
The model has the architecture of Qwen3-30B-A3B (``Qwen3MoeForCausalLM``, normalised top-k
routing) at a size that trains on two CPU cores in about a minute and a half, so that the whole
pipeline (depth policies, routing traces, blind comparisons) runs on real MoE weights where the
reference model is out of reach. It is trained at depth ``TINY_TRAINED_TOP_K`` and loses clearly
when run at depth 1, so the depth arms of the demo differ in a way people can see.
"""

import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, Qwen3MoeConfig, Qwen3MoeForCausalLM
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

from evaluator.corpus import generate_corpus

TINY_TRAINED_TOP_K = 4
TINY_NUM_EXPERTS = 16

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

# Written next to the weights so that anyone can see how a model folder was made.
BUILD_INFO_FILE = "tiny_moe_build.json"

VOCAB_SIZE = 2048
HIDDEN_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = 4
MOE_INTERMEDIATE_SIZE = 64
MAX_POSITIONS = 1024
SEQ_LEN = 512  # the longest long_context documents; a document is never split across rows
TRAIN_DOCS = 3600
VAL_DOCS = 120
BATCH_ROWS = 1
EPOCHS = 1
LEARNING_RATE = 5e-3
WARMUP_FRACTION = 0.05
# A fixed thread count keeps float reductions, hence the weights, identical from one build to the next.
BUILD_THREADS = 1


def tiny_moe_exists(path: Path) -> bool:
    """True when ``path`` holds a saved model and tokenizer (what ``build_tiny_moe`` writes)."""
    return all((path / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json"))


def set_router_top_k(model: torch.nn.Module, top_k: int) -> int:
    """Set ``top_k`` on every router of a loaded Qwen3-MoE model; returns how many routers were changed.

    The routers read ``top_k`` at forward time; ``config.num_experts_per_tok`` is only read when the
    model is built, so changing it on a loaded model does nothing.
    """
    routers = [m for m in model.modules() if isinstance(m, Qwen3MoeTopKRouter)]
    for router in routers:
        router.top_k = top_k
    return len(routers)


def train_tokenizer(texts: Iterable[str], *, vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer that prepends the BOS token and pads on the left."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD_TOKEN, BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # Training documents start with BOS; prompts get it too, so a prompt looks like a document start.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, tokenizer.token_to_id(BOS_TOKEN))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",  # batched generation appends to the right end of every row
        model_max_length=MAX_POSITIONS,
    )


def _config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    num_experts: int,
    top_k: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    moe_intermediate_size: int,
) -> Qwen3MoeConfig:
    return Qwen3MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,  # unused: every layer is an MoE layer
        moe_intermediate_size=moe_intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads // 2,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        num_experts=num_experts,
        num_experts_per_tok=top_k,
        norm_topk_prob=True,  # as in Qwen3-30B-A3B; the transformers default is False
        router_aux_loss_coef=0.01,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _encode_documents(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[list[int]]:
    """Token ids of each document as the model sees it: BOS, text, EOS, cut to ``SEQ_LEN``."""
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    return [[*row, tokenizer.eos_token_id][:SEQ_LEN] for row in ids]


def _pack(documents: list[list[int]], pad_id: int) -> torch.Tensor:
    """First-fit packing of whole documents into rows of ``SEQ_LEN`` tokens, padded on the right.

    Whole documents keep a long_context question in the same row as the facts it asks about.
    """
    rows: list[list[int]] = []
    for doc in documents:
        for row in rows:
            if len(row) + len(doc) <= SEQ_LEN:
                row.extend(doc)
                break
        else:
            rows.append(list(doc))
    return torch.tensor([row + [pad_id] * (SEQ_LEN - len(row)) for row in rows], dtype=torch.long)


def _labels(rows: torch.Tensor, pad_id: int) -> torch.Tensor:
    return rows.masked_fill(rows == pad_id, -100)


@torch.no_grad()
def _perplexity(model: Qwen3MoeForCausalLM, rows: torch.Tensor, pad_id: int, top_k: int) -> float:
    set_router_top_k(model, top_k)
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(rows), BATCH_ROWS):
        batch = rows[start : start + BATCH_ROWS]
        labels = _labels(batch, pad_id)
        n = int((labels[:, 1:] != -100).sum())
        total_loss += float(model(input_ids=batch, labels=labels).loss) * n
        total_tokens += n
    return math.exp(total_loss / total_tokens)


def _lr_at(step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    warmup = max(1, int(steps * WARMUP_FRACTION))
    if step < warmup:
        return LEARNING_RATE * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return LEARNING_RATE * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _train(
    model: Qwen3MoeForCausalLM, rows: torch.Tensor, pad_id: int, seed: int, log: Callable[[str], None]
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.95), weight_decay=0.1)
    order_rng = random.Random(seed)
    batches: list[list[int]] = []
    for _ in range(EPOCHS):
        order = list(range(len(rows)))
        order_rng.shuffle(order)
        batches += [order[i : i + BATCH_ROWS] for i in range(0, len(order), BATCH_ROWS)]
    model.train()
    started = time.monotonic()
    for step, index in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, len(batches))
        batch = rows[index]
        loss = model(input_ids=batch, labels=_labels(batch, pad_id), output_router_logits=True).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 20 == 0 or step == len(batches) - 1:
            progress = training_progress(step + 1, len(batches), time.monotonic() - started)
            log(f"step {step + 1}/{len(batches)} loss {loss.item():.3f}, {progress}")
    model.eval()


def training_progress(done: int, total: int, elapsed: float) -> str:
    """Time spent and, at the rate so far, time left: "12 s elapsed, about 1 min 30 s left"."""
    spent = f"{_duration(elapsed)} elapsed"
    if done >= total:
        return f"{spent}, done"
    if done == 0:
        return spent
    return f"{spent}, about {_duration(elapsed / done * (total - done))} left"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def build_tiny_moe(out_dir: Path, *, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Generate the corpus, train tokenizer and model, save both into ``out_dir``; return a report.

    The model is written into a temporary sibling folder and renamed into place only when complete,
    so a crash never leaves a half-written ``out_dir``; an existing ``out_dir`` is replaced only when it
    is empty or an earlier build (anything else raises FileExistsError before any work). The same seed
    on the same machine gives bit-identical weights.
    """
    out_dir = Path(out_dir)
    _refuse_foreign(out_dir)
    started = time.monotonic()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        corpus = generate_corpus(seed=seed, n_docs=TRAIN_DOCS + VAL_DOCS)
        train_texts = [text for _, text in corpus[:TRAIN_DOCS]]
        val_texts = [text for _, text in corpus[TRAIN_DOCS:]]
        tokenizer = train_tokenizer(train_texts, vocab_size=VOCAB_SIZE)
        pad_id = tokenizer.pad_token_id
        train_rows = _pack(_encode_documents(tokenizer, train_texts), pad_id)
        val_rows = _pack(_encode_documents(tokenizer, val_texts), pad_id)
        train_tokens = int((train_rows != pad_id).sum())
        log(f"corpus: {len(train_texts)} documents, {train_tokens} tokens in {len(train_rows)} rows")

        torch.manual_seed(seed)
        config = _config(
            tokenizer,
            num_experts=TINY_NUM_EXPERTS,
            top_k=TINY_TRAINED_TOP_K,
            hidden_size=HIDDEN_SIZE,
            num_layers=NUM_LAYERS,
            num_heads=NUM_HEADS,
            moe_intermediate_size=MOE_INTERMEDIATE_SIZE,
        )
        model = Qwen3MoeForCausalLM(config)
        log(f"model: {sum(p.numel() for p in model.parameters())} parameters")
        _train(model, train_rows, pad_id, seed, log)
        model.save_pretrained(work_dir)
        tokenizer.save_pretrained(work_dir)

        reloaded = Qwen3MoeForCausalLM.from_pretrained(work_dir, dtype=torch.float32)
        depths = (1, TINY_TRAINED_TOP_K, 2 * TINY_TRAINED_TOP_K)
        perplexity = {str(k): round(_perplexity(reloaded, val_rows, pad_id, k), 4) for k in depths}
        report = {
            "path": str(out_dir),
            "seconds": round(time.monotonic() - started, 1),
            "seed": seed,
            "train_tokens": train_tokens,
            "perplexity": perplexity,
            "trained_top_k": TINY_TRAINED_TOP_K,
            "num_experts": TINY_NUM_EXPERTS,
        }
        (work_dir / BUILD_INFO_FILE).write_text(json.dumps(report, indent=2) + "\n")
        _replace_dir(work_dir, out_dir)
        return report
    finally:
        torch.set_num_threads(previous_threads)
        shutil.rmtree(work_dir, ignore_errors=True)


def _refuse_foreign(out_dir: Path) -> None:
    """Refuse to replace a folder that is not an earlier build: it may hold someone's checkpoint."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file: choose a folder for the tiny model.")
    if any(out_dir.iterdir()) and not (out_dir / BUILD_INFO_FILE).is_file():
        raise FileExistsError(
            f"{out_dir} holds files that build_tiny_moe did not write (it has no {BUILD_INFO_FILE}): "
            "refusing to replace it. Choose a new or empty folder."
        )


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is moved aside first and removed last."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def tiny_random_moe(tmp_dir: Path, *, num_experts: int = 8, top_k: int = 2, seed: int = 0) -> Path:
    """Save an untrained Qwen3-MoE with a small trained tokenizer under ``tmp_dir``; return its folder.

    Builds in about a second, for unit tests that need real routers but not sensible text.
    """
    path = Path(tmp_dir) / f"tiny-random-moe-e{num_experts}-k{top_k}-s{seed}"
    texts = [text for _, text in generate_corpus(seed=seed, n_docs=200)]
    tokenizer = train_tokenizer(texts, vocab_size=512)
    torch.manual_seed(seed)
    config = _config(
        tokenizer,
        num_experts=num_experts,
        top_k=top_k,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        moe_intermediate_size=16,
    )
    Qwen3MoeForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
