"""Progress everywhere: jobs with done / total, duration and time left; the experiment's admin page
updating live; the staff navigation; the tiny model's build with its time left."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from evaluator.models import Category, Checkpoint, Experiment, Generation, Job, Prompt, Variant
from evaluator.tiny import training_progress

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(tmp_path) -> Experiment:
    """Two arms of four outputs: k=1 has three done and one pending, k=2 all four done."""
    checkpoint = Checkpoint.objects.create(name="ckpt", path=str(tmp_path))
    experiment = Experiment.objects.create(
        name="sweep", checkpoint=checkpoint, seeds=[0], status=Experiment.Status.SCHEDULED
    )
    category = Category.objects.create(slug="routine", name="Routine")
    prompts = [Prompt.objects.create(category=category, text=f"Note {i}") for i in range(4)]
    experiment.prompts.set(prompts)
    for k, done in ((1, 3), (2, 4)):
        variant = Variant.objects.create(
            checkpoint=checkpoint, name=f"k={k}", depth={"kind": "fixed", "k": k}
        )
        experiment.variants.add(variant)
        for i, prompt in enumerate(prompts):
            status = Generation.Status.DONE if i < done else Generation.Status.PENDING
            Generation.objects.create(
                experiment=experiment, variant=variant, prompt=prompt, seed=0, status=status
            )
    now = timezone.now()
    Job.objects.create(
        experiment=experiment,
        variant=experiment.variants.get(name="k=1"),
        task_id="running-1",
        status=Job.Status.RUNNING,
        worker="gpu-0",
        stored=3,
        started_at=now - timedelta(seconds=60),
    )
    Job.objects.create(
        experiment=experiment,
        variant=experiment.variants.get(name="k=2"),
        task_id="done-2",
        status=Job.Status.DONE,
        stored=4,
        started_at=now - timedelta(seconds=200),
        finished_at=now - timedelta(seconds=80),
    )
    return experiment


def test_a_running_job_shows_its_arms_progress_duration_and_time_left(client, admin_user, experiment):
    client.force_login(admin_user)
    html = client.get(reverse("jobs")).content.decode()
    running = re.sub(r"\s+", " ", re.search(r'<section id="running">(.*?)</section>', html, re.S).group(1))
    assert "3 / 4 (75%)" in running
    assert "<td>1 min</td>" in running  # running for a minute
    assert "≈ 20 s" in running  # one output left at the rate of three a minute
    done = re.sub(r"\s+", " ", re.search(r'<section id="done">(.*?)</section>', html, re.S).group(1))
    assert "4 / 4 (100%)" in done and "<td>2 min</td>" in done


def test_a_running_job_that_stored_nothing_yet_says_when_it_will_know(client, admin_user, experiment):
    Job.objects.filter(task_id="running-1").update(stored=0)
    client.force_login(admin_user)
    assert "estimated after the first outputs" in client.get(reverse("jobs")).content.decode()


def test_the_experiment_admin_page_has_a_live_progress_panel(client, admin_user, experiment):
    client.force_login(admin_user)
    html = client.get(reverse("admin:evaluator_experiment_change", args=[experiment.pk])).content.decode()
    progress_url = reverse("admin:evaluator_experiment_progress", args=[experiment.pk])
    assert f'hx-get="{progress_url}"' in html
    assert f'data-ws="/ws/experiments/{experiment.pk}/"' in html and "every 5s" in html
    assert "js/live.js" in html and "htmx-2.0.11.min.js" in html
    assert "Outputs 7 / 8" in html


def test_the_progress_panel_refetches_with_the_newest_numbers_and_jobs(client, admin_user, experiment):
    client.force_login(admin_user)
    url = reverse("admin:evaluator_experiment_progress", args=[experiment.pk])
    Generation.objects.filter(experiment=experiment).update(status=Generation.Status.DONE)
    html = re.sub(r"\s+", " ", client.get(url).content.decode())
    assert html.startswith('<div id="live"') and "<html" not in html
    assert "Outputs 8 / 8" in html
    assert "<td>k=1</td> <td>running on gpu-0</td> <td>4 / 4 (100%)</td>" in html


def test_the_progress_panel_is_for_staff_who_may_view_experiments(
    client, viewer, django_user_model, experiment
):
    url = reverse("admin:evaluator_experiment_progress", args=[experiment.pk])
    client.force_login(viewer)
    assert client.get(url).status_code == 302  # the admin sends non-staff to its login
    clerk = django_user_model.objects.create_user("clerk", password="password-clerk", is_staff=True)
    client.force_login(clerk)
    assert client.get(url).status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_experiment"))
    client.force_login(django_user_model.objects.get(pk=clerk.pk))
    assert client.get(url).status_code == 200


def test_staff_navigation_links_jobs_outputs_and_flags(client, admin_user, viewer):
    client.force_login(admin_user)
    html = client.get(reverse("results_list")).content.decode()
    nav = re.search(r"<nav>(.*?)</nav>", html, re.S).group(1)
    for name in ("jobs", "outputs_list", "flag_queue"):
        assert f'href="{reverse(name)}"' in nav
    client.force_login(viewer)
    nav = re.search(r"<nav>(.*?)</nav>", client.get(reverse("results_list")).content.decode(), re.S).group(1)
    assert reverse("jobs") not in nav and reverse("flag_queue") not in nav


def test_the_tiny_model_build_reports_the_time_left_at_the_rate_so_far():
    assert training_progress(0, 400, 0.4) == "0 s elapsed"
    assert training_progress(100, 400, 30.0) == "30 s elapsed, about 1 min 30 s left"
    assert training_progress(400, 400, 125.0) == "2 min 5 s elapsed, done"
