"""Word-level differences between two near-identical outputs, so a rater sees at once what changed.

This runs on every rating page, so its cost is bounded: the common beginning and end are set aside in
linear time (near-identical outputs of two arms usually share long ones), and the word diff runs only on
what lies between, up to MAX_MIDDLE_TOKENS tokens. A longer middle is shown as one changed stretch.
"""

import difflib
import re
from itertools import takewhile

NEAR_IDENTICAL = 0.6
MAX_MIDDLE_TOKENS = 800  # both sides together; a word diff of this size takes a few milliseconds
TOKEN = re.compile(r"\s+|[^\s]+")

Segments = list[tuple[str, bool]]


def _common_prefix(a: list[str], b: list[str]) -> int:
    return sum(1 for _ in takewhile(lambda pair: pair[0] == pair[1], zip(a, b, strict=False)))


def highlight(left: str, right: str) -> tuple[Segments, Segments] | None:
    """Segments (text, changed) for each side when the texts differ only a little; None otherwise."""
    if left == right:
        return None
    a, b = TOKEN.findall(left), TOKEN.findall(right)
    total = len(a) + len(b)
    prefix = _common_prefix(a, b)
    suffix = _common_prefix(a[prefix:][::-1], b[prefix:][::-1])
    middle_a, middle_b = a[prefix : len(a) - suffix], b[prefix : len(b) - suffix]
    if len(middle_a) + len(middle_b) > MAX_MIDDLE_TOKENS:
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
