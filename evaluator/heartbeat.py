"""Worker heartbeats: each generation process says every few seconds where it runs and what it has loaded.

A daemon thread in the worker's child process (the one that runs jobs and holds the model) writes its
WorkerStatus row. It reads the accelerator only when that process has already initialised CUDA: the Celery
parent must never touch CUDA before it forks. The jobs page shows a worker not heard from for OFFLINE_AFTER
seconds as offline. Importing this module (config/celery.py does) connects the signals; nothing runs in the
web process.
"""

import logging
import os
import sys
import threading
from datetime import timedelta
from typing import Any

from celery import signals

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
OFFLINE_AFTER = timedelta(seconds=60)

_state: dict[str, Any] = {"thread": None, "stop": threading.Event(), "wake": threading.Event()}


def device_name() -> str:
    """The accelerator this process uses, or "cpu"; never the first CUDA call of a process."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return "cpu"
    index = torch.cuda.current_device()
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"


def _gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc), or its peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_summary() -> str:
    text = f"RSS {_gib(resident_bytes())}"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        index = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        text += f", GPU {_gib(torch.cuda.memory_reserved(index))} of {_gib(total)}"
    return text


def loaded_checkpoints() -> str:
    """Checkpoints held in this process's engine cache (path, dtype, device), or ""."""
    loading = sys.modules.get("evaluator.engine.loading")
    if loading is None:
        return ""
    with loading._CACHE_LOCK:
        keys = list(loading._CACHE)
    return "; ".join(f"{path} ({dtype}, {device})" for path, dtype, device in keys)


def beat(hostname: str, *, started_at: Any = None) -> bool:
    """Write this process's WorkerStatus row now. Returns whether what it shows changed (device, model)."""
    from django.utils import timezone

    from evaluator.models import WorkerStatus

    fields = {
        "device": device_name()[:200],
        "memory": memory_summary()[:100],
        "loaded_checkpoint": loaded_checkpoints()[:500],
        "pid": os.getpid(),
        "last_seen": timezone.now(),
    }
    if started_at is not None:
        fields["started_at"] = started_at
    before = (
        WorkerStatus.objects.filter(hostname=hostname)
        .values_list("device", "loaded_checkpoint", "pid", "last_seen")
        .first()
    )
    WorkerStatus.objects.update_or_create(hostname=hostname, defaults=fields)
    stale = before is None or before[3] < fields["last_seen"] - OFFLINE_AFTER
    return stale or before[:3] != (fields["device"], fields["loaded_checkpoint"], fields["pid"])


def jobs_changed() -> None:
    """Tell open jobs pages to refresh; a page without a socket refreshes on its timer anyway."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from evaluator.events import JOBS_GROUP

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(JOBS_GROUP, {"type": "jobs.changed"})
    except Exception:
        log.warning("could not publish a worker change", exc_info=True)


def _run(hostname: str, stop: threading.Event, wake: threading.Event) -> None:
    from django.db import connection
    from django.utils import timezone

    started_at = timezone.now()
    while not stop.is_set():
        try:
            changed = beat(hostname, started_at=started_at)
        except Exception:
            # The database may be restarting: the next beat tries again on a fresh connection.
            log.warning("heartbeat of %s failed", hostname, exc_info=True)
            changed = False
        finally:
            connection.close()
        if changed:
            jobs_changed()
        wake.wait(HEARTBEAT_SECONDS)
        wake.clear()


def start(hostname: str) -> threading.Thread:
    """Start the heartbeat thread of this process (once)."""
    thread = _state["thread"]
    if thread is not None and thread.is_alive():
        return thread
    _state["stop"] = threading.Event()
    _state["wake"] = threading.Event()
    thread = threading.Thread(
        target=_run, args=(hostname, _state["stop"], _state["wake"]), name="heartbeat", daemon=True
    )
    _state["thread"] = thread
    thread.start()
    return thread


def stop() -> None:
    _state["stop"].set()
    _state["wake"].set()
    thread = _state["thread"]
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=5)
    _state["thread"] = None


def wake() -> None:
    """Beat soon (after a job starts or ends, so a freshly loaded model shows at once)."""
    _state["wake"].set()


def _on_process_init(sender: Any = None, **kwargs: Any) -> None:
    start(str(sender or "worker"))


def _on_worker_init(**kwargs: Any) -> None:
    # Connected here, after Celery's Django fixup has connected its own handler: the child then closes the
    # database connections it inherited before this thread opens its own.
    signals.worker_process_init.connect(_on_process_init, weak=False, dispatch_uid="heartbeat-start")


signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="heartbeat-init")
signals.worker_process_shutdown.connect(lambda **kw: stop(), weak=False, dispatch_uid="heartbeat-stop")
signals.task_prerun.connect(lambda **kw: wake(), weak=False, dispatch_uid="heartbeat-task-start")
signals.task_postrun.connect(lambda **kw: wake(), weak=False, dispatch_uid="heartbeat-task-end")
