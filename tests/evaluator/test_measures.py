"""Overthinking measures of one output: length without the end token, repeated n-grams, stopping."""

import pytest

from evaluator.measures import output_measures, repetition

EOS = 2


def test_repetition_is_the_share_of_ngrams_seen_before_in_the_same_output():
    assert repetition([1, 2, 3, 4, 5, 6, 7]) == 0.0
    # 1 2 3 4 1 2 3 4 1 2 3 4: nine 4-grams, four distinct
    assert repetition([1, 2, 3, 4] * 3) == pytest.approx(1 - 4 / 9)
    assert repetition([7] * 10) == pytest.approx(1 - 1 / 7)
    assert repetition([1, 2, 3]) == 0.0


def test_an_output_ending_in_the_end_token_stopped_by_itself():
    m = output_measures(token_ids=[5, 6, 7, EOS], eos_token_ids={EOS}, max_new_tokens=4)
    assert (m.length, m.hit_limit) == (3, False)


def test_an_output_that_used_every_token_without_the_end_token_hit_the_limit():
    m = output_measures(token_ids=[5, 6, 7, 8], eos_token_ids={EOS}, max_new_tokens=4)
    assert (m.length, m.hit_limit) == (4, True)
    short = output_measures(token_ids=[5, 6], eos_token_ids={EOS}, max_new_tokens=4)
    assert short.hit_limit is False
