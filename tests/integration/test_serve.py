"""`manage.py serve`: uvicorn and the worker answer, Ctrl-C or SIGTERM stops both, a busy port is refused."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT
from tests.waiting import http_status, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def descendants(pid: int) -> set[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return {int(child) for child in children} | {d for child in children for d in descendants(int(child))}


def running(pid: int) -> bool:
    """Whether the process is alive: a zombie waiting for init to reap it has stopped."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:\tZ") for line in status)
    except FileNotFoundError:
        return False


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


@pytest.fixture
def env(worker_env) -> dict[str, str]:
    """What the worker tests use (the test database, the test Redis), with DEBUG on: no static files to
    collect."""
    return {**worker_env, "DJANGO_DEBUG": "1"}


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_runs_uvicorn_and_the_worker_and_a_signal_stops_both(env, stop_signal):
    port = free_port()
    proc = serve("--port", str(port), "--workers", "2", env=env)
    url = f"http://127.0.0.1:{port}/accounts/login/"
    try:
        wait_for(lambda: http_status(url) == 200, timeout=60, message="serve did not answer")
        children = descendants(proc.pid)
        lines = [command_line(pid) for pid in children]
        assert any("uvicorn config.asgi:application" in line and "--workers 2" in line for line in lines)
        assert any("celery -A config worker -Q gpu -c 1" in line for line in lines)
        assert all(http_status(url) == 200 for _ in range(10))
    finally:
        proc.send_signal(stop_signal)
        output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    assert http_status(url) == 0  # nothing listens any more
    # Grandchildren (uvicorn's and Celery's own workers) end just after their parents: give them a moment.
    wait_for(
        lambda: not any(running(pid) for pid in children), timeout=20, message=f"still running\n{output}"
    )


def test_a_second_serve_on_a_busy_port_says_so_and_the_first_keeps_serving(env):
    port = free_port()
    first = serve("--port", str(port), "--no-worker", env=env)
    url = f"http://127.0.0.1:{port}/accounts/login/"
    try:
        wait_for(lambda: http_status(url) == 200, timeout=60, message="serve did not answer")
        second = serve("--port", str(port), "--no-worker", env=env)
        output, _ = second.communicate(timeout=60)
        assert second.returncode != 0
        assert f"Port {port} on 127.0.0.1 is already in use" in output
        assert "--port" in output  # how to pick another
        assert first.poll() is None
        assert all(http_status(url) == 200 for _ in range(10))
    finally:
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=60)
    assert first.returncode == 0, output


def test_serve_explains_why_it_cannot_run_several_workers_without_redis():
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    proc = serve("--port", str(free_port()), "--workers", "2", env={**env, "DJANGO_DEBUG": "1"})
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Several web workers need REDIS_URL" in output


def test_when_the_web_server_dies_serve_stops_the_worker_and_says_so(env):
    port = free_port()
    proc = serve("--port", str(port), env=env)
    url = f"http://127.0.0.1:{port}/accounts/login/"
    try:
        wait_for(lambda: http_status(url) == 200, timeout=60, message="serve did not answer")
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        pids = {int(pid): command_line(int(pid)) for pid in children.stdout.split()}
        web = next(pid for pid, line in pids.items() if "uvicorn" in line)
        worker = next(pid for pid, line in pids.items() if "celery" in line)
        os.killpg(web, signal.SIGKILL)  # the server and its worker processes
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "the web server (uvicorn) (exit code -9) stopped unexpectedly" in output
    assert not running(worker)  # serve waited for it
