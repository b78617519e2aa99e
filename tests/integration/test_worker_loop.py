"""The whole loop on real services: schedule → a real worker generates → ready pairs → a vote → the CSV."""

import csv
import io

import pytest
from django.urls import reverse

from dashboard.models import Lease, Rating
from dashboard.services import start_session
from evaluator.models import Comparison, Generation
from tests.factories import make_checkpoint, make_experiment
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow]


def test_a_scheduled_experiment_is_generated_by_a_worker_rated_and_exported(
    celery_worker_process, client, rater, admin_user, tiny_model_path
):
    from evaluator import scheduling

    experiment = make_experiment(make_checkpoint(tiny_model_path), depths=(1, 4, 8), max_new_tokens=16)
    scheduling.schedule_experiment(experiment=experiment)
    total = Generation.objects.filter(experiment=experiment).count()
    assert total == 3 * 2

    wait_for(
        lambda: (
            Generation.objects.filter(experiment=experiment, status=Generation.Status.DONE).count() == total
        ),
        timeout=180,
        message="the worker did not produce every output",
    )
    done = Generation.objects.filter(experiment=experiment)
    assert all(g.text and g.new_tokens and g.tokens_per_s > 0 for g in done)
    assert {g.depth_k for g in done} == {1, 4, 8}
    assert Comparison.objects.filter(experiment=experiment, ready_at__isnull=False).count() == 3 * 2

    client.force_login(rater)
    start_session(rater=rater)
    page = client.get(reverse("rate")).content.decode()
    comparison = Lease.objects.get(rater=rater).comparison
    assert comparison.token in page and 'class="outputs"' in page
    client.post(reverse("vote", args=[comparison.token]), {"verdict": "right"})
    assert Rating.objects.get(rater=rater).comparison == comparison

    client.force_login(admin_user)
    response = client.get(reverse("export_votes", args=[experiment.pk]))
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 1
    assert rows[0]["winner"] == comparison.right.variant.name


def test_a_real_worker_scores_reference_answers_measures_outputs_and_the_results_page_shows_them(
    celery_worker_process, client, admin_user, tiny_model_path
):
    from evaluator import scheduling
    from evaluator.models import Prompt

    experiment = make_experiment(
        make_checkpoint(tiny_model_path),
        depths=(1, 4),
        prompts=[
            ("long_context", "The train to Ghent leaves from platform 2.\nQuestion: Which platform?\nAnswer:")
        ],
        max_new_tokens=8,
    )
    Prompt.objects.filter(experiments=experiment).update(reference_answer="2", scoring_rule="contains")
    scheduling.schedule_experiment(experiment=experiment)
    wait_for(
        lambda: Generation.objects.filter(experiment=experiment, status=Generation.Status.DONE).count() == 2,
        timeout=180,
        message="the worker did not produce both outputs",
    )
    for output in Generation.objects.filter(experiment=experiment):
        assert output.reference_correct is not None  # scored when stored
        assert output.output_tokens is not None and output.repetition is not None
        assert output.hit_limit is not None

    client.force_login(admin_user)
    wait_for(
        lambda: (
            "not computed yet" not in client.get(reverse("results", args=[experiment.pk])).content.decode()
        ),
        timeout=120,
        message="the likelihood job did not run",
    )
    page = client.get(reverse("results", args=[experiment.pk])).content.decode()
    assert page.count("1 outputs, 1 prompts") == 4  # each arm's accuracy, overall and in its category
    assert "Recommended depth policy" in page
