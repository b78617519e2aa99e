"""A real Celery worker process on the queue "gpu", pointed at the test database and a test Redis."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from dashboard.management.commands.serve import worker_command

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = settings.DATABASES["default"]
    if connection.vendor != "postgresql":
        pytest.skip("the worker integration test runs against PostgreSQL (make test sets DATABASE_URL)")
    port = f":{db['PORT']}" if db["PORT"] else ""
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST']}{port}/{connection.settings_dict['NAME']}"


def purge_queue() -> None:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("gpu")


@pytest.fixture
def worker_env(transactional_db, tiny_model_path) -> dict[str, str]:
    if not settings.REDIS_URL:
        pytest.skip("the worker integration test needs REDIS_URL (make test sets it)")
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        DEPTH_ARENA_TINY_MOE_PATH=str(tiny_model_path),
        DEPTH_ARENA_DEVICE="cpu",
        PYTHONUNBUFFERED="1",
    )
    purge_queue()
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = log_path.open("ab")
    return subprocess.Popen(
        # What `serve` starts, without the chatter between workers, under a name of this test run.
        [*worker_command(), "--without-gossip", "--without-mingle", "-n", f"test-{os.getpid()}@%h"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.fixture
def celery_worker_process(worker_env, tmp_path) -> Iterator[subprocess.Popen]:
    log_path = tmp_path / "worker.log"
    proc = start_worker(worker_env, log_path)
    try:
        yield proc
    finally:
        stop_worker(proc)
        print(log_path.read_text()[-4000:])


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
