"""The highlighting of near-identical outputs: right, and cheap enough to run on every rating page."""

import random

import pytest

from dashboard.textdiff import highlight


def joined(segments) -> str:
    return "".join(text for text, _ in segments)


def changed(segments) -> list[str]:
    return [text for text, is_changed in segments if is_changed]


def words(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randint(0, 300)}" for _ in range(n)]


def test_identical_and_unrelated_outputs_are_not_highlighted():
    assert highlight("Dear team, the meeting moves.", "Dear team, the meeting moves.") is None
    assert highlight("Dear team, the meeting moves.", "Premise one: all men are mortal.") is None


def test_one_changed_word_is_all_that_is_marked_and_both_texts_survive_whole():
    left = "Dear team,\nthe meeting moves to Monday. Thanks, Ana"
    right = "Dear team,\nthe meeting moves to Friday. Thanks, Ana"
    sides = highlight(left, right)
    assert sides is not None
    assert joined(sides[0]) == left and joined(sides[1]) == right
    assert changed(sides[0]) == ["Monday."] and changed(sides[1]) == ["Friday."]


@pytest.mark.parametrize("n", [3000, 20000])
def test_long_outputs_with_one_change_show_that_change(n):
    base = words(n)
    edited = [*base[: n // 2], "changed", *base[n // 2 + 1 :]]
    one_change = highlight(" ".join(base), " ".join(edited))
    assert one_change is not None and changed(one_change[1]) == ["changed"]
    assert joined(one_change[0]) == " ".join(base) and joined(one_change[1]) == " ".join(edited)


def test_different_outputs_in_the_same_words_are_not_highlighted():
    """Two arms' outputs share their words but not their runs of words: that is no near-identical pair."""
    base = words(150)
    shuffled = random.Random(1).sample(base, len(base))
    assert highlight(" ".join(base), " ".join(shuffled)) is None


def test_a_short_edit_inside_a_long_shared_text_is_diffed_word_by_word():
    base = words(120, seed=7)
    edited = [*base[:40], "new", "words", "here", *base[43:80], *base[81:]]
    sides = highlight(" ".join(base), " ".join(edited))
    assert sides is not None
    assert changed(sides[1]) == ["new words here"] or "new" in "".join(changed(sides[1]))


def test_a_long_different_middle_between_a_long_shared_start_and_end_is_one_stretch():
    start, end = words(2000, seed=2), words(2000, seed=3)
    left = " ".join(start + words(500, seed=4) + end)
    right = " ".join(start + words(500, seed=5) + end)
    sides = highlight(left, right)
    assert sides is not None
    assert joined(sides[0]) == left and joined(sides[1]) == right
    assert len(changed(sides[0])) == 1 and len(changed(sides[1])) == 1
