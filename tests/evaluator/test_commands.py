"""Headless commands: schedule_experiment and import_prompts, with help, clear errors and exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from evaluator.models import Category, Checkpoint, Experiment, Prompt, Variant
from tests.factories import make_checkpoint

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkpoint(tiny_model_path) -> Checkpoint:
    return make_checkpoint(tiny_model_path, name="small")


@pytest.fixture
def draft(checkpoint) -> Experiment:
    experiment = Experiment.objects.create(
        name="depth 1 vs 2", checkpoint=checkpoint, seeds=[0], sampling={"max_new_tokens": 8}
    )
    experiment.variants.set(
        [
            Variant.objects.create(checkpoint=checkpoint, name=f"k={k}", depth={"kind": "fixed", "k": k})
            for k in (1, 2)
        ]
    )
    category = Category.objects.create(slug="routine", name="Routine")
    experiment.prompts.set([Prompt.objects.create(category=category, text="Dear team,")])
    return experiment


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_an_experiment_is_scheduled_by_name_or_id(draft):
    output = run("schedule_experiment", "depth 1 vs 2")

    assert "Scheduled depth 1 vs 2" in output and "2 arms, 2 outputs, 1 comparisons queued" in output
    assert Experiment.objects.get(pk=draft.pk).status == Experiment.Status.SCHEDULED
    with pytest.raises(CommandError, match="it was scheduled already"):
        run("schedule_experiment", str(draft.pk))


def test_an_unknown_experiment_lists_the_known_ones(draft):
    with pytest.raises(CommandError, match=r"No experiment with id or name 'nope'\. Known: depth 1 vs 2"):
        run("schedule_experiment", "nope")


def test_an_experiment_with_problems_is_not_scheduled_and_each_problem_is_said(draft):
    draft.variants.remove(draft.variants.get(name="k=2"))
    draft.seeds = []
    draft.save(update_fields=["seeds"])

    with pytest.raises(CommandError) as failure:
        run("schedule_experiment", "depth 1 vs 2")

    assert "Choose at least two arms to compare." in str(failure.value)
    assert "Seeds must be a non-empty list" in str(failure.value)
    assert Experiment.objects.get(pk=draft.pk).status == Experiment.Status.DRAFT


def test_a_preset_creates_and_schedules_an_experiment(checkpoint):
    Prompt.objects.create(category=Category.objects.create(slug="routine", name="R"), text="Hello")

    output = run("schedule_experiment", "--preset", "depth-sweep", "--checkpoint", "small", "--name", "sweep")

    experiment = Experiment.objects.get(name="sweep")
    assert experiment.status == Experiment.Status.SCHEDULED
    assert sorted(v.depth["k"] for v in experiment.variants.all()) == [1, 2, 4, 8]
    assert "Created sweep" in output and "Scheduled sweep" in output


def test_a_preset_can_stay_a_draft(checkpoint):
    Prompt.objects.create(category=Category.objects.create(slug="routine", name="R"), text="Hello")

    run(
        "schedule_experiment",
        "--preset",
        "base-vs-extreme",
        "--checkpoint",
        str(checkpoint.pk),
        "--create-only",
    )

    assert Experiment.objects.get().status == Experiment.Status.DRAFT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "depth-sweep"], "--preset needs --checkpoint"),
        (["--preset", "depth-sweep", "--checkpoint", "nope"], "No checkpoint with id or name 'nope'"),
        (["--preset", "depth-sweep", "--checkpoint", "small"], "There are no prompts yet"),
        ([], "Name the experiment to schedule"),
    ],
)
def test_preset_misuse_is_explained(checkpoint, args, message):
    with pytest.raises(CommandError, match=message):
        run("schedule_experiment", *args)
    assert not Experiment.objects.exists()


def test_prompts_are_imported_from_a_file(tmp_path):
    Category.objects.create(slug="routine", name="Routine")
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"category": "routine", "text": "Write a reminder."}) + "\n")

    output = run("import_prompts", str(path))

    assert "Imported" in output and "1 created" in output
    assert Prompt.objects.get().text == "Write a reminder."


def test_a_bad_file_imports_nothing_and_lists_problems_by_line(tmp_path):
    Category.objects.create(slug="routine", name="Routine")
    path = tmp_path / "prompts.txt"
    path.write_text("category,text\nroutine,ok\nroutine,\n")

    with pytest.raises(CommandError, match="say --format csv or --format jsonl"):
        run("import_prompts", str(path))
    with pytest.raises(CommandError, match="line 3, text: required"):
        run("import_prompts", str(path), "--format", "csv")
    assert not Prompt.objects.exists()


def test_categories_come_from_a_file_too(tmp_path):
    path = tmp_path / "categories.csv"
    path.write_text("slug,name,order\nroutine,Routine,1\nphilosophy,Philosophy,2\n")

    run("import_prompts", str(path), "--categories")

    assert list(Category.objects.values_list("slug", flat=True)) == ["routine", "philosophy"]


def manage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_commands_have_help_and_fail_with_a_non_zero_exit(tmp_path):
    helped = manage("import_prompts", "--help")
    failed = manage("import_prompts", str(tmp_path / "missing.csv"))

    assert helped.returncode == 0
    assert "Nothing is written unless every record is right" in " ".join(helped.stdout.split())
    assert failed.returncode == 1
    assert "Cannot read" in failed.stderr and "No such file or directory" in failed.stderr
    assert manage("schedule_experiment", "--help").returncode == 0
