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

    assert {(p.line, p.field) for p in failure.value.problems} == {(3, "text"), (3, "colour"), (4, "")}
    assert "line 4: not valid JSON: Expecting value (column 1)" in [str(p) for p in failure.value.problems]
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


# Bad input: each case a message naming the line and the field, and nothing written.


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"category": "routine", "text": "a\\u0000b"}', "text", "NUL character"),
        ('{"category": "routine", "text": "ok", "external_id": "\\ud800"}', "external_id", "lone surrogate"),
        ('{"category": "routine", "text": "ok", "tags": ["\\udfff"]}', "tags", "lone surrogate (\\udfff)"),
    ],
)
def test_text_the_database_cannot_store_is_refused_by_line_and_field(categories, line, field, message):
    data = b'{"category": "routine", "text": "fine"}\n' + line.encode()

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data, format="jsonl")

    [problem] = failure.value.problems
    assert (problem.line, problem.field) == (2, field)
    assert message in problem.message
    assert Prompt.objects.count() == 0


def test_a_nul_byte_in_a_csv_cell_is_refused(categories):
    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=b"category,text\nroutine,a\x00b\n", format="csv")

    assert [str(p) for p in failure.value.problems] == [
        "line 2, text: contains a NUL character (\\u0000), which cannot be stored"
    ]


def test_json_nested_very_deeply_is_a_problem_on_its_line(categories):
    deep = "[" * 100_000 + "]" * 100_000
    data = f'{{"category": "routine", "text": "ok"}}\n{deep}\n{{"category": "routine", "text": {deep}}}\n'

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data.encode(), format="jsonl")

    assert [(p.line, "nested too deeply" in p.message) for p in failure.value.problems] == [
        (2, True),
        (3, True),
    ]
    assert Prompt.objects.count() == 0


def test_an_unclosed_quote_in_csv_is_refused_instead_of_swallowing_the_next_rows(categories):
    data = b'category,text\nroutine,"Dear team,\nroutine,Second prompt\nroutine,Third\n'

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data, format="csv")

    [problem] = failure.value.problems
    assert problem.line == 2
    assert "a quote opened on this line is not closed" in problem.message
    assert Prompt.objects.count() == 0


def test_a_quote_closed_in_the_middle_of_a_cell_is_refused(categories):
    data = b'category,text\nroutine,"Dear team,\nroutine,"Second" prompt\n'

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data, format="csv")

    assert failure.value.problems[0].line == 2
    assert Prompt.objects.count() == 0


def test_a_row_with_too_many_cells_does_not_hide_the_other_problems(categories):
    data = b"category,text\nroutine,a,b,c,d\nnosuch,hi\nroutine,\n"

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data, format="csv")

    assert [(p.line, p.field) for p in failure.value.problems] == [(2, ""), (3, "category"), (4, "text")]
    assert "5 cells, more than the 2 columns" in failure.value.problems[0].message


def test_every_bad_json_line_is_reported_up_to_a_cap(categories):
    data = b"\n".join([b"not json"] * (imports.MAX_PROBLEMS + 50))

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data, format="jsonl")

    problems = failure.value.problems
    assert len(problems) == imports.MAX_PROBLEMS + 1
    assert problems[-1].message == "… and 50 more problems not listed"


def test_a_file_over_the_upload_limit_is_refused_before_it_is_read(categories, settings):
    settings.MAX_UPLOAD_MB = 1
    prompt = "x" * (2 * 1024 * 1024)

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=json.dumps({"category": "routine", "text": prompt}), format="jsonl")

    assert "over the 1 MB limit (DEPTH_ARENA_MAX_UPLOAD_MB)" in str(failure.value)
    assert Prompt.objects.count() == 0


def test_line_separators_inside_json_strings_do_not_split_a_record(categories):
    data = json.dumps({"category": "routine", "text": "one\u2028two\x85three"}, ensure_ascii=False)

    imports.import_prompts(file=data.encode(), format="jsonl")

    assert Prompt.objects.get().text == "one\u2028two\x85three"


def test_a_category_order_beyond_the_column_is_refused(categories):
    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_categories(file=b"slug,name,order\nbig,Big," + b"9" * 40 + b"\n", format="csv")

    [problem] = failure.value.problems
    assert (problem.line, problem.field) == (2, "order")
    assert "from 0 to 2,147,483,647" in problem.message


@pytest.mark.parametrize("tolerance", ["nan", "inf", "-1", "1e999"])
def test_a_tolerance_that_is_no_usable_number_is_refused(categories, tolerance):
    data = f"category,text,reference_answer,scoring_rule,tolerance\nroutine,2+2?,4,numeric,{tolerance}\n"

    with pytest.raises(imports.ImportFailed) as failure:
        imports.import_prompts(file=data.encode(), format="csv")

    assert [(p.line, p.field) for p in failure.value.problems] == [(2, "tolerance")]
