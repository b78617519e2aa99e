"""Overthinking measures of one output, from its token ids: length, repetition, and how it ended.

"More experts may do worse on a primitive task" shows up as outputs that run long, repeat themselves, or never
stop. These are computed when an output is stored and summed up per arm and category beside the votes.

- length: generated tokens, without the end-of-sequence token.
- repetition: the share of the output's n-grams (n = REPETITION_N tokens) that already occurred earlier in the
  same output, 1 − distinct/total (the "rep-n" of Welleck et al., 2019); 0 when it has fewer than n tokens.
- hit_limit: the output used all of max_new_tokens without an end-of-sequence token (it did not stop by
  itself).
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass

REPETITION_N = 4


@dataclass(frozen=True)
class OutputMeasures:
    length: int
    repetition: float
    hit_limit: bool


def repetition(tokens: Sequence[int], n: int = REPETITION_N) -> float:
    """Share of the n-grams repeating an earlier n-gram of the same sequence (0 with fewer than n tokens)."""
    total = len(tokens) - n + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(tokens[i : i + n]) for i in range(total)})
    return 1.0 - distinct / total


def output_measures(
    *, token_ids: Sequence[int], eos_token_ids: Collection[int], max_new_tokens: int
) -> OutputMeasures:
    """The measures of one output; token_ids are the new tokens, an end-of-sequence token included."""
    ended = bool(token_ids) and token_ids[-1] in eos_token_ids
    content = list(token_ids[:-1] if ended else token_ids)
    return OutputMeasures(
        length=len(content),
        repetition=round(repetition(content), 6),
        hit_limit=not ended and len(token_ids) >= max_new_tokens,
    )
