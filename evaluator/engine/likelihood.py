"""Teacher-forced log-likelihood of reference texts under one arm: does depth k model this text better?

Each text is a prefix (a prompt) and an optional continuation (its reference answer). One forward pass per
batch, under the arm's `apply_depth` and `apply_context` as generation runs it, gives the negative
log-likelihood of every token after the first (how well the arm models the category's text) and, apart, of
the continuation's tokens given the prefix (how sure the arm is of the right answer). No sampling, no decoding
loop: the cost is one prefill per text, a small fraction of generating from it.

The continuation is tokenised on its own and appended (with a space when the prefix does not end in one), so
its tokens are exactly the answer's, whatever the tokenizer would merge across the boundary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .context import ContextConfig, apply_context, window
from .depth import DepthPolicy, apply_depth

if TYPE_CHECKING:
    from .loading import LoadedModel

# Positions whose vocabulary logits are formed at once: a 128k-token text never holds [tokens, vocab] whole.
LOGIT_CHUNK = 1024


@dataclass(frozen=True)
class ReferenceText:
    key: Any
    prefix: str
    continuation: str = ""
    category: str = ""
    tags: tuple = ()


@dataclass(frozen=True)
class Scored:
    """nll and answer_nll are sums in nats; tokens counts the predicted tokens (all but the first)."""

    key: Any
    tokens: int
    nll: float
    answer_tokens: int
    answer_nll: float | None
    depth_k: int | None
    seconds: float
    error: str | None = None


def _encode(tokenizer: Any, text: ReferenceText) -> tuple[list[int], int]:
    """Token ids of prefix + continuation, and how many of them are the continuation's."""
    ids = list(tokenizer(text.prefix, add_special_tokens=True)["input_ids"])
    if not text.continuation:
        return ids, 0
    continuation = text.continuation
    if not text.prefix[-1:].isspace() and not continuation[:1].isspace():
        continuation = " " + continuation
    answer = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    return ids + answer, len(answer)


def _token_nll(loaded: LoadedModel, rows: list[list[int]]) -> list[Any]:
    """Per row, the negative log-likelihood of tokens 1..n-1 given those before (a float32 CPU tensor)."""
    import torch

    model = loaded.model
    width = max(len(ids) for ids in rows)
    pad = loaded.pad_token_id if loaded.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):  # right padding: real tokens keep positions 0..n-1
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    input_ids, mask = input_ids.to(loaded.device), mask.to(loaded.device)
    base, head = getattr(model, "model", None), model.get_output_embeddings()
    with torch.inference_mode():
        if base is not None and head is not None:
            hidden = base(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
        else:
            hidden, head = None, None
            logits_all = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        if head is not None and len(rows) * width * head.out_features <= LOGIT_CHUNK * head.out_features * 8:
            # Small batches: one vocabulary projection for all rows, no per-row loop.
            log_p = torch.log_softmax(head(hidden[:, :-1]).float(), dim=-1)
            nll = -log_p.gather(-1, input_ids[:, 1:, None])[..., 0].cpu()
            return [nll[row, : len(ids) - 1] for row, ids in enumerate(rows)]
        result = []
        for row, ids in enumerate(rows):
            n = len(ids)
            targets = input_ids[row, 1:n]
            parts = []
            for start in range(0, n - 1, LOGIT_CHUNK):
                stop = min(n - 1, start + LOGIT_CHUNK)
                logits = head(hidden[row, start:stop]) if head is not None else logits_all[row, start:stop]
                log_p = torch.log_softmax(logits.float(), dim=-1)
                parts.append(-log_p.gather(-1, targets[start:stop, None])[:, 0])
            result.append(torch.cat(parts).cpu() if parts else torch.zeros(0))
    return result


def _batches(items: list, batch_size: int, batch_tokens: int) -> list[list]:
    """Consecutive runs of items (longest first) within the row and padded-token budgets."""
    batches: list[list] = []
    for item in items:
        if (
            batches
            and len(batches[-1]) < batch_size
            and len(batches[-1][0][1]) * (len(batches[-1]) + 1) <= batch_tokens
        ):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


def score_texts(
    loaded: LoadedModel,
    *,
    texts: Sequence[ReferenceText],
    depth: DepthPolicy,
    context: ContextConfig,
    batch_size: int = 8,
    batch_tokens: int = 2048,
    max_tokens: int | None = None,
) -> list[Scored]:
    """Score every text under one arm; results in text order, a text that cannot be scored with its error.

    A batch holds at most batch_size texts and batch_tokens padded positions (a long text goes alone: padding
    and attention cost grow with the widest row). max_tokens: longest text scored (default: the arm's
    window); a longer one is reported, never cut.
    """
    architecture = loaded.architecture
    depth.validate(architecture.num_experts)
    context.validate(architecture)
    if depth.kind == "auto":
        raise ValueError("Resolve an auto policy per text first (router.auto_requests), as generation does")
    limit = min(window(architecture, context), max_tokens or window(architecture, context))
    results: list[Scored | None] = [None] * len(texts)
    groups: dict[int | None, list[tuple[int, list[int], int]]] = {}
    for index, text in enumerate(texts):
        k = depth.k_for(text.category, list(text.tags))
        ids, answer = _encode(loaded.tokenizer, text)
        if len(ids) < 2:
            results[index] = Scored(text.key, 0, 0.0, 0, None, k, 0.0, "fewer than two tokens")
        elif len(ids) > limit:
            results[index] = Scored(
                text.key, 0, 0.0, 0, None, k, 0.0, f"{len(ids):,} tokens, over the {limit:,} scored at once"
            )
        else:
            groups.setdefault(k, []).append((index, ids, answer))
    with apply_context(loaded, context):
        for k, items in groups.items():
            with apply_depth(loaded, k=k, dynamic=depth if k is None else None):
                items.sort(key=lambda item: -len(item[1]))  # similar lengths share a batch: little padding
                for batch in _batches(items, batch_size, batch_tokens):
                    began = time.perf_counter()
                    nlls = _token_nll(loaded, [ids for _, ids, _ in batch])
                    seconds = (time.perf_counter() - began) / len(batch)
                    for (index, ids, answer), nll in zip(batch, nlls, strict=True):
                        results[index] = Scored(
                            key=texts[index].key,
                            tokens=len(ids) - 1,
                            nll=float(nll.sum()),
                            answer_tokens=answer,
                            answer_nll=float(nll[-answer:].sum()) if answer else None,
                            depth_k=k,
                            seconds=seconds,
                        )
    return [r for r in results if r is not None]
