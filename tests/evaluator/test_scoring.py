"""Reference answers: each rule on the answer line, and references that cannot be scored refused."""

import pytest

from evaluator.scoring import ScoringError, answer_line, check_reference, score


def test_the_answer_is_the_first_non_empty_line_of_the_output():
    assert answer_line("\n  \n 1653.\n\nQuestion: what is 7?\nAnswer: 7") == " 1653."


@pytest.mark.parametrize(
    ("output", "reference", "rule", "tolerance", "expected"),
    [
        (" Platform 12.\nQuestion: …", "platform 12", "exact", None, True),
        (" Platform 12 at noon", "Platform 12", "exact", None, False),
        (" in the glovebox, as always", "in the glovebox", "contains", None, True),
        (" 120", "12", "contains", None, False),  # word boundaries: 12 is not in 120
        (" It is Oslo.\nOslo is a city.", "oslo", "contains", None, True),
        (" Nairobi\n", r"^\s*nairobi\b", "regex", None, True),
        (" the answer is Nairobi", r"^\s*nairobi\b", "regex", None, False),
        (" 1,653 crates", "1653", "numeric", None, True),
        (" 17.4", "17", "numeric", 0.5, True),
        (" 17.6", "17", "numeric", 0.5, False),
        (" no number here", "17", "numeric", 1.0, False),
        ("\n\nThe clerk's locker number is 1653.", "1653", "contains", None, True),
        (" 9\nAnswer: 1653", "1653", "contains", None, False),  # only the answer line counts
    ],
)
def test_each_rule_decides_on_the_answer_line(output, reference, rule, tolerance, expected):
    assert score(output=output, reference=reference, rule=rule, tolerance=tolerance) is expected


@pytest.mark.parametrize(
    ("reference", "rule", "tolerance", "message"),
    [
        ("(unclosed", "regex", None, "regular expression"),
        ("many", "numeric", None, "needs a number"),
        ("12", "numeric", -1.0, "tolerance"),
        ("Oslo", "exact", 0.5, "numeric rule only"),
        ("  ", "contains", None, "empty"),
        ("Oslo", "fuzzy", None, "Unknown scoring rule"),
    ],
)
def test_a_reference_that_cannot_be_scored_is_refused_with_the_reason(reference, rule, tolerance, message):
    with pytest.raises(ScoringError, match=message):
        check_reference(reference=reference, rule=rule, tolerance=tolerance)
