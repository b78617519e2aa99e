"""Word-level differences between two near-identical outputs, so a rater sees at once what changed.

This runs on every rating page, so its cost is bounded: the common beginning and end are set aside in
linear time (near-identical outputs of two arms usually share long ones), and the word diff runs only on
what lies between, up to MAX_MIDDLE_TOKENS tokens, and only when the two middles share enough runs of
words to be worth it (a linear-time check): different outputs share words but few runs of them, and a
word diff of two different texts costs the most. Otherwise the middle is one changed stretch.
"""

import difflib
import re
from itertools import takewhile

NEAR_IDENTICAL = 0.6
MAX_MIDDLE_TOKENS = 800  # both sides together; a word diff of this size takes a few milliseconds
SHINGLE = 3  # words in a run
MIN_SHARED_RUNS = 0.3  # share of the middles' runs of words both have, below which no word diff is tried
SMALL_MIDDLE = 40  # tokens: a middle this short is always diffed
TOKEN = re.compile(r"\s+|[^\s]+")

Segments = list[tuple[str, bool]]


def _common_prefix(a: list[str], b: list[str]) -> int:
    return sum(1 for _ in takewhile(lambda pair: pair[0] == pair[1], zip(a, b, strict=False)))


def _shared_runs(a: list[str], b: list[str]) -> float:
    """The Jaccard similarity of the two token lists' runs of SHINGLE words."""
    words_a, words_b = [t for t in a if not t.isspace()], [t for t in b if not t.isspace()]
    runs_a = {tuple(words_a[i : i + SHINGLE]) for i in range(max(1, len(words_a) - SHINGLE + 1))}
    runs_b = {tuple(words_b[i : i + SHINGLE]) for i in range(max(1, len(words_b) - SHINGLE + 1))}
    return len(runs_a & runs_b) / len(runs_a | runs_b)


def highlight(left: str, right: str) -> tuple[Segments, Segments] | None:
    """Segments (text, changed) for each side when the texts differ only a little; None otherwise."""
    if left == right:
        return None
    a, b = TOKEN.findall(left), TOKEN.findall(right)
    total = len(a) + len(b)
    prefix = _common_prefix(a, b)
    suffix = _common_prefix(a[prefix:][::-1], b[prefix:][::-1])
    middle_a, middle_b = a[prefix : len(a) - suffix], b[prefix : len(b) - suffix]
    size = len(middle_a) + len(middle_b)
    if size > MAX_MIDDLE_TOKENS or (
        size > SMALL_MIDDLE and _shared_runs(middle_a, middle_b) < MIN_SHARED_RUNS
    ):
        # Too much differs to diff word by word on every page; near-identical only if the shared
        # beginning and end alone make it so.
        if 2 * (prefix + suffix) / total < NEAR_IDENTICAL:
            return None
        opcodes = [("replace", 0, len(middle_a), 0, len(middle_b))]
    else:
        matcher = difflib.SequenceMatcher(a=middle_a, b=middle_b, autojunk=False)
        matched = prefix + suffix + sum(block.size for block in matcher.get_matching_blocks())
        if 2 * matched / total < NEAR_IDENTICAL:
            return None
        opcodes = matcher.get_opcodes()
    left_segments: Segments = [("".join(a[:prefix]), False)] if prefix else []
    right_segments: Segments = list(left_segments)
    for op, i1, i2, j1, j2 in opcodes:
        changed = op != "equal"
        if i2 > i1:
            left_segments.append(("".join(middle_a[i1:i2]), changed))
        if j2 > j1:
            right_segments.append(("".join(middle_b[j1:j2]), changed))
    if suffix:
        left_segments.append(("".join(a[len(a) - suffix :]), False))
        right_segments.append(("".join(b[len(b) - suffix :]), False))
    return left_segments, right_segments
