"""Importing and exporting prompts and categories: all or nothing, problems by line and field, round trips."""

import json

import pytest

from evaluator import imports
from evaluator.models import Category, Prompt

pytestmark = pytest.mark.django_db


@pytest.fixture
def categories():
    return [
        Category.objects.create(slug="routine", name="Routine"),
        Category.objects.create(slug="philosophy", name="Philosophy"),
    ]


def jsonl(*records) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


def test_a_csv_file_adds_its_prompts_with_tags(categories):
    data = (
        b"category,text,tags,external_id\n"
        b'routine,"Dear team,\nthe meeting moves.",email;short,r-1\n'
        b"philosophy,Is a heap of sand still a heap?,reasoning,\n"
    )

    report = imports.import_prompts(file=data, format="csv")

    assert (report.created, report.unchanged) == (2, 0)
    email = Prompt.objects.get(external_id="r-1")
    assert email.text == "Dear team,\nthe meeting moves."
    assert email.tags == ["email", "short"]
    assert email.category.slug == "routine"
    assert Prompt.objects.get(category__slug="philosophy").tags == ["reasoning"]


def test_a_jsonl_file_adds_its_prompts(categories):
    data = jsonl(
        {"category": "routine", "text": "Write a reminder.", "tags": ["short"]},
        {"category": "philosophy", "text": "What is a reason?"},
    )

    report = imports.import_prompts(file=data, format="jsonl")

    assert report.created == 2
    assert sorted(Prompt.objects.values_list("text", flat=True)) == ["What is a reason?", "Write a reminder."]


def test_one_bad_record_imports_nothing_and_every_problem_names_its_line_and_field(categories):
    data = (
        b"category,text,tags,external_id\n"
        b"routine,Fine prompt,,a\n"
        b"nosuch,Unknown category,,b\n"
        b"routine,,,c\n"
        b"routine,Another,,a\n"
    )

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data, format="csv")

    problems = {(p.line, p.field) for p in failure.value.problems}
    assert problems == {(3, "category"), (4, "text"), (5, "external_id")}
    assert "unknown category 'nosuch'" in str(failure.value)
    assert "line 5, external_id: 'a' already used on line 2" in [str(p) for p in failure.value.problems]
    assert Prompt.objects.count() == 0


def test_csv_line_numbers_count_the_lines_of_multiline_cells(categories):
    data = b'category,text\nroutine,"one\ntwo\nthree"\nroutine,\n'

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data, format="csv")

    assert [(p.line, p.field) for p in failure.value.problems] == [(5, "text")]


def test_jsonl_problems_name_the_line_and_the_field(categories):
    data = (
        b'{"category": "routine", "text": "ok"}\n'
        b"\n"
        b'{"category": "routine", "text": 5, "colour": "red"}\n'
        b"not json\n"
    )

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data, format="jsonl")

    assert [str(p) for p in failure.value.problems] == ["line 4: not valid JSON: Expecting value (column 1)"]

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data.rsplit(b"\n", 2)[0], format="jsonl")
    assert {(p.line, p.field) for p in failure.value.problems} == {(3, "text"), (3, "colour")}
    assert Prompt.objects.count() == 0


def test_unknown_columns_and_missing_columns_are_reported_on_the_header(categories):
    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=b"category,prompt\nroutine,hi\n", format="csv")

    assert {(p.line, p.field) for p in failure.value.problems} == {(1, "text"), (1, "prompt")}


def test_new_categories_are_created_only_when_asked(categories):
    data = jsonl({"category": "long_context", "text": "A long document."})

    with pytest.raises(imports.ImportFailed):
        imports.import_prompts(file=data, format="jsonl")
    report = imports.import_prompts(file=data, format="jsonl", create_categories=True)

    assert report.categories_created == ["long_context"]
    assert Category.objects.get(slug="long_context").name == "Long context"


def test_importing_the_same_file_twice_adds_nothing_the_second_time(categories):
    data = jsonl(
        {"category": "routine", "text": "Write a reminder."},
        {"category": "routine", "text": "Summarise.", "external_id": "s-1"},
    )
    imports.import_prompts(file=data, format="jsonl")

    again = imports.import_prompts(file=data, format="jsonl")

    assert (again.created, again.unchanged) == (0, 2)
    assert Prompt.objects.count() == 2


def test_an_existing_external_id_with_other_text_is_refused(categories):
    imports.import_prompts(
        file=jsonl({"category": "routine", "text": "Old", "external_id": "x"}), format="jsonl"
    )

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(
            file=jsonl({"category": "routine", "text": "New", "external_id": "x"}), format="jsonl"
        )

    assert failure.value.problems[0].field == "external_id"
    assert Prompt.objects.get(external_id="x").text == "Old"


def test_a_file_that_is_not_utf8_is_refused_as_a_whole(categories):
    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file="category,text\nroutine,caf\u00e9\n".encode("latin-1"), format="csv")

    assert "not UTF-8" in str(failure.value)


@pytest.mark.parametrize("format", ["csv", "jsonl"])
def test_an_export_imports_back_unchanged(categories, format):
    Prompt.objects.create(category=categories[0], text='Quote "this", please;\nthen stop.', tags=["a", "b"])
    Prompt.objects.create(category=categories[1], text="=1+1", external_id="p-2")
    exported = imports.export_prompts(prompts=Prompt.objects.order_by("pk"), format=format)
    before = list(Prompt.objects.order_by("pk").values_list("category__slug", "text", "tags", "external_id"))
    Prompt.objects.all().delete()

    report = imports.import_prompts(file=exported, format=format)

    assert report.created == 2
    after = list(Prompt.objects.order_by("pk").values_list("category__slug", "text", "tags", "external_id"))
    assert after == before


def test_categories_are_created_and_updated_from_a_file(categories):
    data = (
        b"slug,name,description,order\nroutine,Routine work,E-mails and templates,1\ndialogue,Dialogue,,2\n"
    )

    report = imports.import_categories(file=data, format="csv")

    assert (report.created, report.updated) == (1, 1)
    assert Category.objects.get(slug="routine").description == "E-mails and templates"
    assert Category.objects.get(slug="dialogue").order == 2


def test_bad_category_records_import_nothing(categories):
    data = jsonl({"slug": "with space", "name": "X"}, {"slug": "ok", "name": "", "order": -1})

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_categories(file=data, format="jsonl")

    assert {(p.line, p.field) for p in failure.value.problems} == {(1, "slug"), (2, "name"), (2, "order")}
    assert not Category.objects.filter(slug="ok").exists()
