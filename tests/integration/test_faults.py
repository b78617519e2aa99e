"""Faults on the real services: the broker gone, a worker killed mid-batch, PostgreSQL restarted.

Each test breaks one part for real (a Redis port with nothing behind it, SIGKILL on the worker's child, a
PostgreSQL restart) and checks what a user would notice: the admin's message, the experiment's state, the
jobs page, and rows that are written once and only once.
"""

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connections
from django.urls import reverse
from kombu import pools

from dashboard.management.commands.serve import web_command
from evaluator import scheduling
from evaluator.models import (
    Category,
    Checkpoint,
    Comparison,
    Experiment,
    Generation,
    Job,
    Prompt,
    Variant,
    WorkerStatus,
)
from tests.factories import make_checkpoint
from tests.integration.conftest import ROOT, start_worker, stop_worker
from tests.waiting import http_status, wait_for

pytestmark = [pytest.mark.slow]
POSTGRESQL_CLUSTER = ("15", "main")


@pytest.fixture
def fault_env(worker_env) -> dict[str, str]:
    """What a worker or web process of this test needs: the test database and the test Redis."""
    return worker_env


def make_study(path: Path, *, name: str, prompts: int = 2, new_tokens: int = 8) -> Experiment:
    checkpoint = Checkpoint.objects.filter(path=str(path)).first() or make_checkpoint(path)
    variants = [
        Variant.objects.get_or_create(
            checkpoint=checkpoint, name=f"k={k}", defaults={"depth": {"kind": "fixed", "k": k}}
        )[0]
        for k in (1, 2)
    ]
    category = Category.objects.get_or_create(slug="routine", defaults={"name": "Routine"})[0]
    experiment = Experiment.objects.create(
        name=name,
        checkpoint=checkpoint,
        seeds=[0],
        sampling={"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False},
    )
    experiment.variants.set(variants)
    experiment.prompts.set(
        [
            Prompt.objects.create(category=category, text=f"{name} prompt {i}: Dear team,")
            for i in range(prompts)
        ]
    )
    return experiment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point the Celery app of this process at another broker for a while (its cached connections too)."""
    from config.celery import app

    def reset() -> None:
        if app._pool is not None:
            app._pool.force_close_all()
        app._after_fork()  # drops the app's cached connection and producer pools
        # kombu keeps producer pools in a process-wide registry keyed by broker URL; a closed one left
        # there would be handed back when the URL comes back.
        pools.reset()

    previous = app.conf.broker_url
    reset()
    app.conf.broker_url = url
    try:
        yield
    finally:
        reset()
        app.conf.broker_url = previous


@contextmanager
def redis_server(port: int, tmp_path: Path) -> Iterator[None]:
    """A throwaway redis-server of this test on its own port (the shared one is never touched)."""
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _redis_ping(port), timeout=10, message="the throwaway redis-server did not start")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _redis_ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False


def test_scheduling_while_redis_is_unreachable_leaves_a_draft_with_the_error_and_works_later(
    transactional_db, client, admin_user, tiny_model_path, tmp_path
):
    experiment = make_study(tiny_model_path, name="broker down")
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    client.force_login(admin_user)

    with celery_broker(broker):
        response = client.post(
            reverse("admin:evaluator_experiment_changelist"),
            {"action": "schedule", "_selected_action": [experiment.pk]},
            follow=True,
        )
        page = response.content.decode()
        assert "The job queue could not be reached" in page and "Nothing was queued; schedule again." in page
        experiment.refresh_from_db()
        assert experiment.status == Experiment.Status.DRAFT
        assert "could not be reached" in experiment.schedule_error
        assert not Generation.objects.filter(experiment=experiment).exists()
        assert not Comparison.objects.filter(experiment=experiment).exists()
        assert not Job.objects.filter(experiment=experiment).exists()
        change_page = client.get(reverse("admin:evaluator_experiment_change", args=[experiment.pk]))
        assert "The job queue could not be reached" in change_page.content.decode()

        with redis_server(port, tmp_path):
            report = scheduling.schedule_experiment(experiment=experiment)
            import redis

            queued = redis.Redis(port=port).llen("gpu")

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.SCHEDULED and experiment.schedule_error == ""
    assert report.generations == Generation.objects.filter(experiment=experiment).count() == 4
    assert Job.objects.filter(experiment=experiment, status=Job.Status.QUEUED).count() == 2
    assert queued == 4  # per arm, its generation job and the likelihood job queued behind it


def wait_for_jobs_done(experiment: Experiment) -> None:
    """A job is marked done just after its last batch is stored: stopping the worker or the database
    between the two would interrupt it again, so a test waits for this, not only for the outputs."""
    wait_for(
        lambda: not Job.objects.filter(experiment=experiment).exclude(status=Job.Status.DONE).exists(),
        timeout=60,
        message="the jobs were not marked done after their outputs were written",
    )


def child_of(parent: int) -> int | None:
    """The pid of the worker's pool process as its heartbeat reports it, once it is parent's child."""
    status = WorkerStatus.objects.filter(hostname__startswith=f"test-{os.getpid()}@").first()
    if status is None or not status.pid:
        return None
    try:
        stat = Path(f"/proc/{status.pid}/stat").read_text()
    except OSError:
        return None
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    return status.pid if ppid == parent else None


def test_a_worker_killed_mid_batch_runs_its_job_again_and_writes_every_output_once(
    fault_env, client, admin_user, tiny_model_path, tmp_path
):
    experiment = make_study(tiny_model_path, name="killed", prompts=24, new_tokens=160)
    worker = start_worker({**fault_env, "DEPTH_ARENA_BATCH_SIZE": "2"}, tmp_path / "worker.log")
    try:
        scheduling.schedule_experiment(experiment=experiment)
        total = Generation.objects.filter(experiment=experiment).count()
        child = wait_for(lambda: child_of(worker.pid), timeout=120, message="the worker sent no heartbeat")
        first_arm = wait_for(
            lambda: Job.objects.filter(experiment=experiment, status=Job.Status.RUNNING).first(),
            timeout=120,
            message="no job started",
        )
        arm_rows = Generation.objects.filter(experiment=experiment, variant=first_arm.variant)
        wait_for(
            lambda: arm_rows.filter(status=Generation.Status.DONE).count() >= 2,
            timeout=120,
            message="the first arm wrote no batch",
        )
        os.kill(child, signal.SIGKILL)
        written_before = {
            g.pk: (g.text, g.finished_at) for g in arm_rows.filter(status=Generation.Status.DONE)
        }
        assert 2 <= len(written_before) < arm_rows.count(), "the kill came too late to be mid-experiment"

        wait_for(
            lambda: (
                Generation.objects.filter(experiment=experiment, status=Generation.Status.DONE).count()
                == total
            ),
            timeout=300,
            message="the outputs were not all written after the worker's child was killed",
        )
        wait_for_jobs_done(experiment)
        replacement = wait_for(lambda: child_of(worker.pid), timeout=60, message="no new pool process")
    finally:
        stop_worker(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])

    assert replacement != child
    assert Generation.objects.filter(experiment=experiment).count() == total == 2 * 24
    for generation in Generation.objects.filter(pk__in=written_before):
        assert (generation.text, generation.finished_at) == written_before[generation.pk]
    killed_job = Job.objects.get(pk=first_arm.pk)
    assert killed_job.attempts == 2 and killed_job.status == Job.Status.DONE
    assert Comparison.objects.filter(experiment=experiment, ready_at__isnull=False).count() == 24

    client.force_login(admin_user)
    page = re.sub(r"\s+", " ", client.get(reverse("jobs")).content.decode())
    assert '2 <span class="error">(ran again after an interruption)</span>' in page


def restart_postgresql() -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *POSTGRESQL_CLUSTER, "restart"],
        check=True,
        timeout=120,
        capture_output=True,
    )
    wait_for(
        lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]).returncode == 0,
        timeout=60,
        message="PostgreSQL did not come back",
    )
    # This test process's own pooled connections died too: start it afresh (the web and worker processes
    # under test get no such help).
    for connection in connections.all(initialized_only=True):
        connection.close()
        if hasattr(connection, "close_pool"):
            connection.close_pool()


@contextmanager
def web_server(env: dict[str, str], log_path: Path) -> Iterator[str]:
    port = free_port()
    log = log_path.open("ab")
    proc = subprocess.Popen(
        web_command("127.0.0.1", port, 1),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: http_status(f"{base}/accounts/login/") == 200,
            timeout=60,
            message="the web server did not start",
        )
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_web_and_worker_reconnect_after_postgresql_restarts(
    fault_env, client, admin_user, tiny_model_path, tmp_path
):
    client.force_login(admin_user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    env = fault_env
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        with web_server(env, tmp_path / "web.log") as base:
            before = make_study(tiny_model_path, name="before restart")
            scheduling.schedule_experiment(experiment=before)
            wait_for(
                lambda: (
                    Generation.objects.filter(experiment=before, status=Generation.Status.DONE).count() == 4
                ),
                timeout=180,
                message="the worker did not finish before the restart",
            )
            wait_for_jobs_done(before)
            assert http_status(f"{base}/jobs/", cookie) == 200

            restart_postgresql()

            after = make_study(tiny_model_path, name="after restart")
            scheduling.schedule_experiment(experiment=after)
            wait_for(
                lambda: (
                    Generation.objects.filter(experiment=after, status=Generation.Status.DONE).count() == 4
                ),
                timeout=180,
                message="the worker did not reconnect to PostgreSQL after the restart",
            )
            wait_for_jobs_done(after)
            # The web process's first request since the restart is answered: it replaced its dead connections.
            assert http_status(f"{base}/jobs/", cookie) == 200
    finally:
        stop_worker(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])
        print((tmp_path / "web.log").read_text()[-3000:])

    assert not Job.objects.filter(experiment=after, status=Job.Status.FAILED).exists()
    assert Job.objects.get(experiment=after, variant__name="k=1").attempts == 1
