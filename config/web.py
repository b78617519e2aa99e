"""Start the ASGI web server (daphne) as one or several processes serving one port.

Django runs a synchronous view on one thread per process, so one daphne process uses one core at most. Each
process gets a listening socket of its own, all bound to the same port with SO_REUSEPORT, and adopts it
(`daphne --fd`): the kernel then spreads new connections evenly over the processes. (With one socket shared
by all, whichever process woke first accepted a whole burst, and keep-alive connections stayed with it.)
WebSockets work in every process: the channel layer (Redis) carries events between them; with the in-memory
layer `serve` keeps a single process.
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


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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


def listen(host: str, port: int, count: int = 1) -> list[socket.socket]:
    """`count` listening IPv4 sockets on one port, one for each web process; port 0 picks a free port."""
    sockets = [_bind(host, port)]
    port = sockets[0].getsockname()[1]
    try:
        sockets += [_bind(host, port) for _ in range(count - 1)]
    except OSError:
        close(sockets)
        raise
    return sockets


def close(sockets: list[socket.socket]) -> None:
    """Close this process's copies; started servers keep theirs (a dead server's socket goes with it)."""
    for sock in sockets:
        sock.close()


def start_web(
    sockets: list[socket.socket],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdout=None,
    stderr=None,
) -> list[subprocess.Popen]:
    """Start one daphne process per listening socket, serving the Django ASGI app."""
    processes: list[subprocess.Popen] = []
    try:
        for sock in sockets:
            fd = sock.fileno()
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "config.daphne_server", "--fd", str(fd), ASGI_APP],
                    cwd=cwd,
                    env=dict(env) if env is not None else None,
                    pass_fds=(fd,),
                    stdout=stdout,
                    stderr=stderr,
                )
            )
    except OSError:
        stop(processes)
        raise
    return processes


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
