"""Start the ASGI server and one generation worker together; Ctrl-C stops both."""

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve the web app (daphne, HTTP + WebSocket) and one Celery worker on queue 'gpu' until Ctrl-C."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="Serve the web app only.")

    def handle(self, *args, host: str, port: int, no_worker: bool, **options) -> None:
        python = sys.executable
        commands = [[python, "-m", "daphne", "-b", host, "-p", str(port), "config.asgi:application"]]
        if not no_worker:
            commands.append(
                [
                    python,
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
            )
        processes = [subprocess.Popen(cmd, cwd=settings.BASE_DIR) for cmd in commands]
        self.stdout.write(
            self.style.SUCCESS(f"Depth Arena is running: open http://{host}:{port}/  (Ctrl-C stops it)")
        )
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for proc in processes:
                    if proc.poll() is not None:
                        stopping = True
                        self.stderr.write(
                            f"{proc.args[2]} stopped with exit code {proc.returncode}; stopping."
                        )
                time.sleep(0.5)
        finally:
            for proc in processes:
                if proc.poll() is None:
                    proc.terminate()
            for proc in processes:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        failed = [p for p in processes if p.returncode not in (0, -signal.SIGTERM, None)]
        if failed and not stopping:
            raise CommandError("a process stopped unexpectedly")
