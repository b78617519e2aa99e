"""The jobs page: queued, running, done and failed jobs, workers from their heartbeats, retry of failures."""

import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from django.utils import timezone

from evaluator import jobs
from evaluator.consumers import JobsConsumer
from evaluator.events import JOBS_GROUP
from evaluator.models import Category, Checkpoint, Experiment, Generation, Job, Prompt, Variant, WorkerStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(tmp_path) -> Experiment:
    checkpoint = Checkpoint.objects.create(name="ckpt", path=str(tmp_path))
    experiment = Experiment.objects.create(
        name="sweep", checkpoint=checkpoint, seeds=[0], status=Experiment.Status.SCHEDULED
    )
    category = Category.objects.create(slug="routine", name="Routine")
    prompt = Prompt.objects.create(category=category, text="Hi")
    for k in (1, 2):
        variant = Variant.objects.create(
            checkpoint=checkpoint, name=f"k={k}", depth={"kind": "fixed", "k": k}
        )
        experiment.variants.add(variant)
        Generation.objects.create(experiment=experiment, variant=variant, prompt=prompt, seed=0)
    experiment.prompts.add(prompt)
    return experiment


def job(experiment, name: str, task_id: str) -> Job:
    return Job.objects.create(
        experiment=experiment, variant=experiment.variants.get(name=name), task_id=task_id
    )


def worker(hostname: str, *, seconds_ago: float = 1, **fields) -> WorkerStatus:
    return WorkerStatus.objects.create(
        hostname=hostname, last_seen=timezone.now() - timedelta(seconds=seconds_ago), **fields
    )


def section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, f"no {name} section"
    return re.sub(r"\s+", " ", match.group(1))


@pytest.fixture
def staff(client, admin_user):
    client.force_login(admin_user)
    return client


def test_jobs_appear_in_the_section_of_their_state(staff, experiment):
    job(experiment, "k=1", "queued-1")
    job(experiment, "k=2", "running-1")
    jobs.job_started(task_id="running-1", worker="gpu0@host")
    job(experiment, "k=1", "done-1")
    jobs.job_started(task_id="done-1", worker="gpu0@host")
    jobs.job_finished(task_id="done-1", stored=7)
    job(experiment, "k=2", "failed-1")
    jobs.job_failed(task_id="failed-1", error="CUDA out of memory")
    worker("gpu0@host")

    html = staff.get(reverse("jobs")).content.decode()

    assert "sweep" in section(html, "queued") and "k=1" in section(html, "queued")
    assert "gpu0@host" in section(html, "running") and "k=2" in section(html, "running")
    assert "<td>7</td>" in section(html, "done")
    assert "CUDA out of memory" in section(html, "failures")
    assert "1 queued · 1 running · 1 done · 1 failed" in html


def test_a_job_run_again_after_an_interruption_says_so(staff, experiment):
    job(experiment, "k=1", "again")
    jobs.job_started(task_id="again", worker="gpu0@host")
    jobs.job_started(task_id="again", worker="gpu0@host")

    html = staff.get(reverse("jobs")).content.decode()

    assert '2 <span class="error">(ran again after an interruption)</span>' in section(html, "running")


def test_a_running_job_whose_worker_went_silent_is_flagged(staff, experiment):
    job(experiment, "k=1", "orphan")
    jobs.job_started(task_id="orphan", worker="gone@host")
    worker("gone@host", seconds_ago=120)

    html = staff.get(reverse("jobs")).content.decode()

    assert "worker offline" in section(html, "running")


def test_workers_show_host_device_memory_and_model_and_go_offline_after_a_minute(staff):
    worker(
        "gpu0@box",
        device="cuda:0 NVIDIA H200",
        memory="RSS 3.1 GiB, GPU 61.0 GiB of 139.8 GiB",
        loaded_checkpoint="/models/qwen3 (bf16, cuda)",
    )
    worker("old@box", seconds_ago=61)

    html = section(staff.get(reverse("jobs")).content.decode(), "workers")

    online, offline = html.split("old@box")
    assert "gpu0@box" in online and ">online<" in online
    assert "NVIDIA H200" in online and "GPU 61.0 GiB of 139.8 GiB" in online and "/models/qwen3" in online
    assert "offline" in offline


def test_failed_outputs_are_listed_with_their_message_and_retried_by_post(staff, experiment):
    jobs.fail_generations(
        generation_ids=list(experiment.generations.values_list("pk", flat=True)), message="ValueError: bad"
    )
    html = staff.get(reverse("jobs")).content.decode()
    assert "2 failed outputs" in section(html, "failures")
    assert "ValueError: bad (2×)" in section(html, "failures")
    url = reverse("retry_failed", args=[experiment.pk])
    assert f'action="{url}"' in html

    assert staff.get(url).status_code == 405
    response = staff.post(url, follow=True)

    assert "sweep: 2 failed outputs queued again." in response.content.decode()
    assert set(experiment.generations.values_list("status", flat=True)) == {Generation.Status.PENDING}


def test_retry_requires_the_csrf_token(admin_user, experiment):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    jobs.fail_generations(
        generation_ids=list(experiment.generations.values_list("pk", flat=True)), message="x"
    )

    assert client.post(reverse("retry_failed", args=[experiment.pk])).status_code == 403
    assert experiment.generations.filter(status=Generation.Status.FAILED).count() == 2


def test_htmx_gets_only_the_live_part(staff):
    response = staff.get(reverse("jobs"), headers={"HX-Request": "true"})

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="live"')
    assert "<html" not in html


def test_the_page_refreshes_on_events_and_on_a_timer(staff):
    html = staff.get(reverse("jobs")).content.decode()

    assert 'data-ws="/ws/jobs/"' in html
    assert 'hx-trigger="experiment-changed from:body throttle:1s, every 5s"' in html


@pytest.mark.parametrize("persona", ["rater", "viewer", "stranger"])
def test_the_jobs_page_is_closed_to_everyone_but_staff(client, request, persona, experiment):
    client.force_login(request.getfixturevalue(persona))

    assert client.get(reverse("jobs")).status_code == 403
    assert client.post(reverse("retry_failed", args=[experiment.pk])).status_code == 403


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(reverse("jobs"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def _socket_messages(user) -> tuple[bool, object]:
    communicator = WebsocketCommunicator(JobsConsumer.as_asgi(), "/ws/jobs/")
    communicator.scope["user"] = user
    connected, code = await communicator.connect()
    if not connected:
        return False, code
    await get_channel_layer().group_send(JOBS_GROUP, {"type": "experiment.changed", "experiment": 1})
    first = await communicator.receive_json_from(timeout=2)
    await get_channel_layer().group_send(JOBS_GROUP, {"type": "jobs.changed"})
    second = await communicator.receive_json_from(timeout=2)
    await communicator.disconnect()
    return True, [first, second]


def test_staff_hear_of_job_and_worker_changes_over_the_socket(memory_layer, admin_user):
    connected, messages = async_to_sync(_socket_messages)(admin_user)

    assert connected
    assert messages == [{"changed": "experiment"}, {"changed": "workers"}]


def test_others_cannot_open_the_jobs_socket(memory_layer, rater):
    connected, code = async_to_sync(_socket_messages)(rater)

    assert not connected
    assert code == 4403
