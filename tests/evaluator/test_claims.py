"""Jobs claim their arm's rows: a second job leaves a live claim alone, takes over a dead one, and the same
job delivered again takes its own rows back."""

from datetime import timedelta

import pytest
from django.utils import timezone

from evaluator import jobs, scheduling
from evaluator.models import Category, Checkpoint, Experiment, Generation, Prompt, Variant
from evaluator.tasks import generate_arm
from tests.factories import make_checkpoint, scheduled_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def arm(tmp_path) -> tuple[Experiment, Variant]:
    checkpoint = Checkpoint.objects.create(name="ckpt", path=str(tmp_path))
    experiment = Experiment.objects.create(
        name="sweep", checkpoint=checkpoint, seeds=[0, 1], status=Experiment.Status.SCHEDULED
    )
    variant = Variant.objects.create(checkpoint=checkpoint, name="k=2", depth={"kind": "fixed", "k": 2})
    category = Category.objects.create(slug="routine", name="Routine")
    for text in ("Hi", "Dear team,"):
        prompt = Prompt.objects.create(category=category, text=text)
        for seed in (0, 1):
            Generation.objects.create(experiment=experiment, variant=variant, prompt=prompt, seed=seed)
    return experiment, variant


def claim(arm: tuple[Experiment, Variant], task_id: str) -> set[int]:
    experiment, variant = arm
    rows = jobs.claim_generations(experiment_id=experiment.pk, variant_id=variant.pk, task_id=task_id)
    return {g.pk for g in rows}


def test_a_job_claims_every_pending_row_of_its_arm(arm):
    claimed = claim(arm, "job-a")

    assert claimed == set(Generation.objects.values_list("pk", flat=True))
    assert set(Generation.objects.values_list("claimed_by", flat=True)) == {"job-a"}


def test_another_job_claims_nothing_while_the_first_claim_is_fresh(arm):
    claim(arm, "job-a")

    assert claim(arm, "job-b") == set()
    assert set(Generation.objects.values_list("claimed_by", flat=True)) == {"job-a"}


def test_another_job_takes_over_a_claim_older_than_the_job_time_limit(arm, settings):
    first = claim(arm, "job-a")
    Generation.objects.update(claimed_at=timezone.now() - timedelta(seconds=settings.JOB_TIME_LIMIT + 1))

    assert claim(arm, "job-b") == first
    assert set(Generation.objects.values_list("claimed_by", flat=True)) == {"job-b"}


def test_the_same_job_delivered_again_takes_its_own_rows_back(arm):
    first = claim(arm, "job-a")

    assert claim(arm, "job-a") == first
    assert set(Generation.objects.values_list("attempts", flat=True)) == {2}


def test_rows_already_written_are_never_claimed(arm):
    done = Generation.objects.first()
    Generation.objects.filter(pk=done.pk).update(status=Generation.Status.DONE)

    assert done.pk not in claim(arm, "job-a")


def test_a_job_that_stops_at_a_pause_frees_the_rows_it_did_not_write(arm):
    experiment, _ = arm
    first = claim(arm, "job-a")
    scheduling.pause_experiment(experiment=experiment)
    jobs.job_finished(task_id="job-a", stored=0)

    assert claim(arm, "job-b") == first


def test_resuming_hands_the_rows_of_superseded_jobs_to_the_new_job(arm, django_capture_on_commit_callbacks):
    experiment, _ = arm
    first = claim(arm, "job-a")
    scheduling.pause_experiment(experiment=experiment)
    experiment.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False):
        scheduling.resume_experiment(experiment=experiment)

    assert claim(arm, "job-b") == first


def test_retrying_failed_outputs_lets_the_retry_job_take_them(arm, django_capture_on_commit_callbacks):
    experiment, _ = arm
    first = claim(arm, "job-a")
    jobs.fail_generations(generation_ids=list(first), message="CUDA out of memory")
    with django_capture_on_commit_callbacks(execute=False):
        assert scheduling.retry_failed(experiment=experiment) == len(first)

    assert claim(arm, "job-b") == first


def test_a_task_leaves_rows_alone_that_a_live_job_holds(tiny_model_path):
    experiment = scheduled_experiment(make_checkpoint(tiny_model_path), depths=(1, 4))
    held, free = experiment.variants.order_by("pk")
    jobs.claim_generations(experiment_id=experiment.pk, variant_id=held.pk, task_id="running-elsewhere")

    assert generate_arm(experiment.pk, held.pk) == 0
    assert generate_arm(experiment.pk, free.pk) == 2
    assert not Generation.objects.filter(variant=held).exclude(status=Generation.Status.PENDING).exists()
    assert set(Generation.objects.filter(variant=held).values_list("claimed_by", flat=True)) == {
        "running-elsewhere"
    }
