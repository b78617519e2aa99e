"""Start the ASGI web server (daphne) as one or several processes that accept on one listening socket.

Django runs a synchronous view on one thread per process, so one daphne process uses one core at most. With
several processes the kernel spreads connections over them; the socket is bound here, once, and each daphne
adopts it (`--fd`), so they share one port without SO_REUSEPORT. WebSockets work in every process: the channel
layer (Redis) carries events between them, and with the in-memory layer `serve` keeps a single process.
"""

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ASGI_APP = "config.asgi:application"


def default_processes() -> int:
    """One web process per core, at most 4 (the database and the worker want their share)."""
    return max(1, min(4, os.cpu_count() or 1))


def collect_static_files() -> None:
    """With DEBUG off pages name static files by their hashed copies: make sure those exist (quietly)."""
    from django.conf import settings
    from django.core.management import call_command

    if not settings.DEBUG:
        call_command("collectstatic", interactive=False, verbosity=0)


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening IPv4 socket that child processes inherit; port 0 picks a free port."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:  # pragma: no cover - no IPv4 at all
        raise OSError(f"Cannot open a socket: {exc}") from exc
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. "
            "Choose another port, or an IPv4 address of this machine."
        ) from exc
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def start_web(
    sock: socket.socket,
    processes: int,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdout=None,
    stderr=None,
) -> list[subprocess.Popen]:
    """Start `processes` daphne processes serving the Django ASGI app on the already listening socket."""
    fd = sock.fileno()
    command = [sys.executable, "-m", "daphne", "--fd", str(fd), ASGI_APP]
    return [
        subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            pass_fds=(fd,),
            stdout=stdout,
            stderr=stderr,
        )
        for _ in range(processes)
    ]


def stop(processes: list[subprocess.Popen], timeout: float = 20) -> None:
    """Ask each process to stop (SIGTERM), then kill those still running after the timeout."""
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
