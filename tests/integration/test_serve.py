"""`manage.py serve`: several daphne processes answer on one port, and Ctrl-C (SIGTERM) stops them all."""

import os
import signal
import socket
import subprocess
import sys

import pytest
from django.conf import settings

from tests.integration.conftest import ROOT, database_url
from tests.waiting import http_status, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--no-worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_runs_several_web_processes_on_one_port_and_stops_them(tmp_path):
    if not settings.REDIS_URL:
        pytest.skip("several web processes need REDIS_URL (make test sets it)")
    env = {**os.environ, "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL, "DJANGO_DEBUG": "1"}
    port = free_port()
    proc = serve("--port", str(port), "--web-processes", "2", env=env)
    try:
        url = f"http://127.0.0.1:{port}/accounts/login/"
        wait_for(lambda: http_status(url) == 200, timeout=60, message="serve did not answer")
        servers = subprocess.run(
            ["pgrep", "-P", str(proc.pid), "-f", "daphne"], capture_output=True, text=True
        )
        assert len(servers.stdout.split()) == 2
        assert all(http_status(url) == 200 for _ in range(20))
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert http_status(url) == 0  # nothing listens any more


def test_serve_explains_why_it_cannot_run_several_processes_without_redis():
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    proc = serve("--port", str(free_port()), "--web-processes", "2", env={**env, "DJANGO_DEBUG": "1"})
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Several web processes need REDIS_URL" in output


def test_when_a_web_process_dies_serve_stops_the_rest_and_says_so():
    if not settings.REDIS_URL:
        pytest.skip("several web processes need REDIS_URL (make test sets it)")
    env = {**os.environ, "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL, "DJANGO_DEBUG": "1"}
    port = free_port()
    proc = serve("--port", str(port), "--web-processes", "2", env=env)
    url = f"http://127.0.0.1:{port}/accounts/login/"
    try:
        wait_for(lambda: http_status(url) == 200, timeout=60, message="serve did not answer")
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        victim, survivor = (int(pid) for pid in children.stdout.split())
        os.kill(victim, signal.SIGKILL)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "stopped unexpectedly" in output
    assert not os.path.exists(f"/proc/{survivor}")  # stopped and reaped
