"""Word-level differences between two near-identical outputs, so a rater sees at once what changed."""

import difflib
import re

NEAR_IDENTICAL = 0.6
TOKEN = re.compile(r"\s+|[^\s]+")


def highlight(left: str, right: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]] | None:
    """Segments (text, changed) for each side when the texts differ only a little; None otherwise."""
    if left == right:
        return None
    a, b = TOKEN.findall(left), TOKEN.findall(right)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    if matcher.ratio() < NEAR_IDENTICAL:
        return None
    left_segments: list[tuple[str, bool]] = []
    right_segments: list[tuple[str, bool]] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        changed = op != "equal"
        if i2 > i1:
            left_segments.append(("".join(a[i1:i2]), changed))
        if j2 > j1:
            right_segments.append(("".join(b[j1:j2]), changed))
    return left_segments, right_segments
