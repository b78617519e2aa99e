"""Serve the app with uvicorn (HTTP + WebSocket) and one generation worker; Ctrl-C or SIGTERM stops both."""

import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

# Seconds a stopping server or worker gets before it is killed: uvicorn waits this long for open
# WebSockets, and a worker for the batch it is writing (a killed job is redelivered, acks are late).
STOP_SECONDS = 20


def default_workers() -> int:
    """Two web processes per core and one more, as gunicorn's documentation advises: Django runs a
    process's synchronous views one at a time, so a slow page (a results computation) would otherwise
    hold up the votes behind it."""
    return 2 * (os.cpu_count() or 1) + 1


def web_command(host: str, port: int, workers: int) -> list[str]:
    """uvicorn as its documentation runs it; Django has no lifespan events, and open WebSockets (results
    pages) would otherwise hold up a shutdown. Idle connections stay open longer than a rater reads
    (uvicorn's 5 s default is shorter), so a vote never races the server closing its connection."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "config.asgi:application",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--lifespan",
        "off",
        "--timeout-graceful-shutdown",
        "5",
        "--timeout-keep-alive",
        "75",
    ]


def worker_command() -> list[str]:
    """The generation worker: queue "gpu", one process (it holds the model), prefetch 1 (config.celery)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-Q",
        "gpu",
        "-c",
        "1",
        "--loglevel",
        "INFO",
    ]


def check_port_free(host: str, port: int) -> None:
    """Bind the port once, as uvicorn will (SO_REUSEADDR, no SO_REUSEPORT), so a busy port is refused here
    with a clear message instead of starting a second server on it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise CommandError(f"Cannot listen on {host!r}: {exc}.") from exc
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise CommandError(
                f"Port {port} on {host} is already in use (another `serve`, or another program): "
                f"{exc.strerror or exc}. Stop that, or pick another port: "
                f"`manage.py serve --port {port + 1}` (`make run PORT={port + 1}`)."
            ) from exc


def stop(processes: dict[str, subprocess.Popen]) -> None:
    """SIGTERM to each child (uvicorn and Celery stop their own processes), SIGKILL to the group of any
    still running after STOP_SECONDS."""
    for proc in processes.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for proc in processes.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Command(BaseCommand):
    help = "Serve the web app (uvicorn, HTTP + WebSocket) and one Celery worker on queue 'gpu' until Ctrl-C."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to listen on (default 8000).")
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help=f"uvicorn worker processes (default with REDIS_URL: {default_workers()}, two per core and "
            "one more; 1 without, as the in-memory channel layer does not reach across processes).",
        )
        parser.add_argument("--no-worker", action="store_true", help="Serve the web app only.")

    def handle(self, *args, host: str, port: int, workers: int | None, no_worker: bool, **options) -> None:
        if workers is None:
            workers = default_workers() if settings.REDIS_URL else 1
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if workers > 1 and not settings.REDIS_URL:
            raise CommandError(
                "Several web workers need REDIS_URL: the in-memory channel layer cannot carry live updates "
                "from one process to another. Set REDIS_URL or use --workers 1."
            )
        if not 0 < port < 65536:
            raise CommandError("--port must be between 1 and 65535.")
        check_port_free(host, port)
        if not settings.DEBUG:
            # With DEBUG off pages name static files by their hashed copies: make sure those exist.
            call_command("collectstatic", interactive=False, verbosity=0)

        commands = {"web server (uvicorn)": web_command(host, port, workers)}
        if not no_worker:
            commands["worker (celery)"] = worker_command()
        processes: dict[str, subprocess.Popen] = {}
        stopping = False

        def request_stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        try:
            for name, command in commands.items():
                # A process group of its own: Ctrl-C reaches only this command, which stops each child once.
                processes[name] = subprocess.Popen(command, cwd=settings.BASE_DIR, process_group=0)
            self.stdout.write(
                self.style.SUCCESS(f"Depth Arena is running: open http://{host}:{port}/  (Ctrl-C stops it)"),
            )
            self.stdout.write("Forgot the demo passwords? python manage.py reset_passwords admin rater")
            self.stdout.flush()
            crashed: list[str] = []
            while not stopping and not crashed:
                crashed = [name for name, proc in processes.items() if proc.poll() is not None]
                time.sleep(0.5)
        except OSError as exc:
            raise CommandError(f"Could not start the servers: {exc}") from exc
        finally:
            stop(processes)
        if crashed:
            names = ", ".join(f"the {name} (exit code {processes[name].returncode})" for name in crashed)
            raise CommandError(f"{names} stopped unexpectedly; the other processes were stopped too.")
