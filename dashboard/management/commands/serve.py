"""Start the ASGI web server and one generation worker together; Ctrl-C stops both."""

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config import web


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


class Command(BaseCommand):
    help = (
        "Serve the web app (daphne, HTTP + WebSocket; several processes on one port) and one Celery "
        "worker on queue 'gpu' until Ctrl-C."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="IPv4 address to listen on (default 127.0.0.1)."
        )
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--web-processes",
            type=int,
            default=None,
            help="daphne processes sharing the port (default: one per core up to 4 with Redis; 1 without, "
            "as the in-memory channel layer does not reach across processes).",
        )
        parser.add_argument("--no-worker", action="store_true", help="Serve the web app only.")

    def handle(
        self, *args, host: str, port: int, web_processes: int | None, no_worker: bool, **options
    ) -> None:
        if web_processes is None:
            web_processes = web.default_processes() if settings.REDIS_URL else 1
        if web_processes < 1:
            raise CommandError("--web-processes must be at least 1.")
        if web_processes > 1 and not settings.REDIS_URL:
            raise CommandError(
                "Several web processes need REDIS_URL: the in-memory channel layer cannot carry live "
                "updates from one process to another. Set REDIS_URL or use --web-processes 1."
            )
        web.collect_static_files()
        try:
            sockets = web.listen(host, port, web_processes)
        except OSError as exc:
            raise CommandError(str(exc)) from exc
        port = sockets[0].getsockname()[1]
        processes: list[subprocess.Popen] = []
        try:
            processes += web.start_web(sockets, cwd=settings.BASE_DIR)
            if not no_worker:
                processes.append(subprocess.Popen(worker_command(), cwd=settings.BASE_DIR))
        except OSError as exc:
            web.stop(processes)
            raise CommandError(f"Could not start the servers: {exc}") from exc
        finally:
            web.close(sockets)  # the servers hold their own copies
        self.stdout.write(
            self.style.SUCCESS(f"Depth Arena is running: open http://{host}:{port}/  (Ctrl-C stops it)")
        )
        stopping, crashed = False, []

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and not crashed:
                crashed = [proc for proc in processes if proc.poll() is not None]
                time.sleep(0.5)
        finally:
            web.stop(processes)
        if crashed:
            names = ", ".join(f"{proc.args[2]} (exit code {proc.returncode})" for proc in crashed)
            raise CommandError(f"{names} stopped unexpectedly; the other processes were stopped too.")
