"""Reference answers: whether an output gives a prompt's expected answer, by one of four rules.

A base model continues text: after "Answer:" it writes the answer and then keeps going ("1653.\n\nQuestion:
..."). The answer is therefore the output's first non-empty line, and every rule looks at that line only, so
an output does not pass by listing every number of the document.

- exact: the line equals the reference, ignoring case, surrounding spaces and punctuation, and inner runs of
  white space.
- contains: the reference (normalised the same way) occurs in the line, on word boundaries ("12" is not in
  "120").
- regex: the reference is a regular expression that `re.search` finds in the line, ignoring case.
- numeric: the first number of the line is within `tolerance` of the reference number (thousands separators
  allowed: "1,653").

Pure Python: the worker scores outputs as it stores them, and tests call it directly.
"""

import math
import re
import unicodedata

RULES = ("exact", "contains", "regex", "numeric")
RULE_LABELS = {
    "exact": "exact (the answer line equals the reference)",
    "contains": "contains (the reference occurs in the answer line)",
    "regex": "regular expression (found in the answer line)",
    "numeric": "numeric (within the tolerance)",
}
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_SPACE = re.compile(r"\s+")
_EDGE_PUNCTUATION = " \t.,;:!?\"'()[]{}«»“”‘’`*_-–—"


class ScoringError(ValueError):
    """The reference cannot be scored with this rule (says what to change)."""


def answer_line(output: str) -> str:
    """The first non-empty line of an output: where a continuation states its answer."""
    for line in output.splitlines():
        if line.strip():
            return line
    return ""


def normalize(text: str) -> str:
    """Case-folded, NFKC, inner white space collapsed, punctuation stripped from both ends."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", text).strip(_EDGE_PUNCTUATION)


def first_number(text: str) -> float | None:
    match = _NUMBER.search(text)
    return float(match.group().replace(",", "")) if match else None


def check_reference(*, reference: str, rule: str, tolerance: float | None = None) -> None:
    """Raise ScoringError when the reference cannot be scored under the rule (bad regex, no number, …)."""
    if rule not in RULES:
        raise ScoringError(f"Unknown scoring rule {rule!r}: use one of {', '.join(RULES)}.")
    if not reference.strip():
        raise ScoringError("The reference answer is empty.")
    if rule == "regex":
        try:
            re.compile(reference)
        except re.error as exc:
            raise ScoringError(f"The reference is not a valid regular expression: {exc}.") from None
    if rule == "numeric":
        if first_number(reference) is None:
            raise ScoringError(f"A numeric rule needs a number as the reference, got {reference!r}.")
        if tolerance is not None and (not math.isfinite(tolerance) or tolerance < 0):
            raise ScoringError(f"The tolerance must be a number ≥ 0, got {tolerance!r}.")
    elif tolerance not in (None, 0, 0.0):
        raise ScoringError("A tolerance applies to the numeric rule only.")


def score(*, output: str, reference: str, rule: str, tolerance: float | None = None) -> bool:
    """Whether the output's answer line gives the reference answer under the rule."""
    check_reference(reference=reference, rule=rule, tolerance=tolerance)
    line = answer_line(output)
    if rule == "regex":
        return re.search(reference, line, flags=re.IGNORECASE) is not None
    if rule == "numeric":
        got, want = first_number(line), first_number(reference)
        return got is not None and abs(got - want) <= (tolerance or 0.0) + 1e-12 * max(1.0, abs(want))
    answer, wanted = normalize(line), normalize(reference)
    if rule == "exact":
        return answer == wanted
    return re.search(rf"(?<!\w){re.escape(wanted)}(?!\w)", answer) is not None
