"""Gold checks look like real outputs: the degraded copy keeps the words, the length and the opening."""

from collections import Counter

import pytest

from evaluator.jobs import degraded_copy

EMAIL = (
    "Dear team,\nThe meeting moves to Monday at ten. Please bring the budget figures. Sam will present the "
    "hiring plan. We expect questions on the timeline. Thanks for your help."
)


@pytest.mark.parametrize("seed", range(20))
def test_a_degraded_copy_differs_but_keeps_length_opening_and_vocabulary(seed: int) -> None:
    copy = degraded_copy(EMAIL, seed=seed)
    assert copy != EMAIL
    assert copy.startswith("Dear team,\nThe meeting moves to Monday at ten.")
    assert abs(len(copy) - len(EMAIL)) <= 0.25 * len(EMAIL)
    assert set(copy.split()) <= set(EMAIL.split())  # no marker, no ellipsis, no foreign words
    assert "…" not in copy and copy.count("\n") == EMAIL.count("\n")


def test_a_short_output_is_degraded_by_its_word_order() -> None:
    text = "Dear team, the new schedule starts next week and everyone should check their shifts"
    copy = degraded_copy(text, seed=2)
    assert copy != text and Counter(copy.split()) == Counter(text.split())
