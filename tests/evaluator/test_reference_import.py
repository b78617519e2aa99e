"""Reference answers in CSV / JSON Lines prompt files: optional columns, checked by line, exported back."""

import pytest

from evaluator import imports
from evaluator.models import Category, Prompt

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def dialogue():
    return Category.objects.create(slug="dialogue", name="Dialogue")


def test_a_csv_file_may_carry_a_reference_answer_rule_and_tolerance():
    data = (
        "category,text,reference_answer,scoring_rule,tolerance\n"
        'dialogue,"User: 9 plus 8?\nAssistant:",17,numeric,0.5\n'
        "dialogue,User: Capital of Kenya?,Nairobi,,\n"
        "dialogue,User: Hello,,,\n"
    )
    imports.import_prompts(file=data, format="csv")
    rows = {p.text[:12]: (p.reference_answer, p.scoring_rule, p.tolerance) for p in Prompt.objects.all()}
    assert rows == {
        "User: 9 plus": ("17", "numeric", 0.5),
        "User: Capita": ("Nairobi", "contains", None),
        "User: Hello": ("", "contains", None),
    }


def test_a_reference_that_cannot_be_scored_is_a_problem_on_its_line():
    data = (
        '{"category": "dialogue", "text": "a", "reference_answer": "(", "scoring_rule": "regex"}\n'
        '{"category": "dialogue", "text": "b", "reference_answer": "many", "scoring_rule": "numeric"}\n'
        '{"category": "dialogue", "text": "c", "tolerance": 2}\n'
        '{"category": "dialogue", "text": "d", "reference_answer": "x", "scoring_rule": "fuzzy"}\n'
    )
    with pytest.raises(imports.ImportFailed) as failed:
        imports.import_prompts(file=data, format="jsonl")
    where = [(p.line, p.field) for p in failed.value.problems]
    assert where == [
        (1, "reference_answer"),
        (2, "reference_answer"),
        (3, "reference_answer"),
        (4, "scoring_rule"),
    ]
    assert Prompt.objects.count() == 0


@pytest.mark.parametrize("format", ["csv", "jsonl"])
def test_an_export_with_references_imports_back_as_it_was(format, dialogue):
    Prompt.objects.create(
        category=dialogue,
        text="q1",
        external_id="a",
        reference_answer="17",
        scoring_rule="numeric",
        tolerance=1.0,
    )
    Prompt.objects.create(category=dialogue, text="q2", external_id="b")
    exported = imports.export_prompts(prompts=Prompt.objects.order_by("pk"), format=format)
    before = list(Prompt.objects.values_list("text", "reference_answer", "scoring_rule", "tolerance"))
    Prompt.objects.all().delete()
    imports.import_prompts(file=exported, format=format)
    assert (
        list(
            Prompt.objects.order_by("pk").values_list("text", "reference_answer", "scoring_rule", "tolerance")
        )
        == before
    )
