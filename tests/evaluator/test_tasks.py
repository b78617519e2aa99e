"""The generation task: real outputs from the small model, stored once; failures marked with the reason."""

import shutil

import pytest

from evaluator.engine.loading import CheckpointError, forget_loaded
from evaluator.models import Comparison, Generation, Prompt
from evaluator.tasks import generate_arm
from tests.factories import make_checkpoint, run_generations, scheduled_experiment

pytestmark = pytest.mark.django_db


def test_a_task_writes_every_output_of_its_arm_with_its_cost(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 8))
    run_generations(experiment)
    generations = Generation.objects.filter(experiment=experiment)
    assert all(g.status == "done" and g.text and g.new_tokens > 0 and g.tokens_per_s > 0 for g in generations)
    assert {g.depth_k for g in generations} == {1, 8}
    deep = generations.filter(depth_k=8).first()
    assert deep.mean_active_experts == pytest.approx(8.0)
    assert len(deep.routing["counts"]) == experiment.checkpoint.num_layers
    assert Comparison.objects.filter(experiment=experiment, ready_at__isnull=False).count() == 2


def test_running_a_task_again_produces_nothing_twice(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4))
    run_generations(experiment)
    texts = dict(Generation.objects.values_list("pk", "text"))
    run_generations(experiment)
    assert dict(Generation.objects.values_list("pk", "text")) == texts
    assert Generation.objects.count() == 4


def test_a_failing_task_marks_its_outputs_failed_with_the_message(tiny_model_path, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_path, copy)
    experiment = scheduled_experiment(make_checkpoint(copy), depths=(1, 4))
    shutil.rmtree(copy)
    forget_loaded()
    broken, healthy = experiment.variants.order_by("pk")
    with pytest.raises(CheckpointError):
        generate_arm(experiment.pk, broken.pk)
    failed = Generation.objects.filter(experiment=experiment, variant=broken)
    assert all(g.status == "failed" and "Checkpoint folder not found" in g.error for g in failed)
    assert Generation.objects.filter(experiment=experiment, variant=healthy, status="pending").count() == 2


def test_a_prompt_over_the_limit_fails_alone(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4), max_new_tokens=8)
    Prompt.objects.filter(pk=experiment.prompts.first().pk).update(text="word " * 3000)
    run_generations(experiment)
    assert Generation.objects.filter(experiment=experiment, status="failed").count() == 2
    assert Generation.objects.filter(experiment=experiment, status="done").count() == 2
    assert "token" in Generation.objects.filter(status="failed").first().error


def test_a_job_is_cut_into_chunks_only_between_prompts():
    from types import SimpleNamespace

    from evaluator.tasks import chunks_by_prompt

    rows = [SimpleNamespace(prompt_id=p, seed=s) for p in (1, 2, 3) for s in range(3)]
    chunks = chunks_by_prompt(rows, 4)
    assert [[r.prompt_id for r in chunk] for chunk in chunks] == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]
    assert [r for chunk in chunks for r in chunk] == rows
    assert [len(chunk) for chunk in chunks_by_prompt(rows, 6)] == [6, 3]


def test_a_job_whose_experiment_was_deleted_does_nothing(db):
    from evaluator.tasks import generate_arm

    assert generate_arm(987654, 1) == 0
