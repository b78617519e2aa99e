"""Events sent over the channel layer when experiments move, for live pages (results, jobs)."""

import asyncio
import logging
import os
import threading
import time

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

JOBS_GROUP = "jobs"


def experiment_group(experiment_id: int) -> str:
    return f"experiment-{experiment_id}"


def experiment_changed(experiment_id: int, **detail: object) -> None:
    """Tell live pages that an experiment's generations or votes changed; never fails the caller."""
    if get_channel_layer() is None:
        return
    try:
        async_to_sync(experiment_changed_async)(experiment_id, **detail)
    except Exception:
        log.warning("could not publish a change of experiment %s", experiment_id, exc_info=True)


async def experiment_changed_async(experiment_id: int, **detail: object) -> None:
    """experiment_changed, awaited on an event loop."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "experiment.changed", "experiment": experiment_id, **detail}
    try:
        await layer.group_send(experiment_group(experiment_id), message)
        await layer.group_send(JOBS_GROUP, message)
    except Exception:
        # Live updates are a convenience: pages fall back to polling, the stored data is what counts.
        log.warning("could not publish a change of experiment %s", experiment_id, exc_info=True)


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's event loop, when called from a thread that a request's sync code runs in."""
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


VOTES_COALESCE_SECONDS = 0.5


class Coalescer:
    """Sends at most one event per key per interval from this process: the first at once, and any that
    come within the interval folded into one sent when it ends.

    A busy experiment takes dozens of votes a second, and each event costs the voter's request two
    round trips to the channel layer. The pages re-fetch at most once a second anyway, so one event
    per half second loses nothing they show, and the last vote is always announced.

    The trailing event goes out on the server's event loop when the first was sent from a request, as
    the channel layer expects (the in-memory layer is not thread-safe); elsewhere (a worker, a
    command) a timer thread sends it.
    """

    def __init__(self, send, interval: float, send_async=None) -> None:
        self.send, self.send_async, self.interval = send, send_async, interval
        self.lock = threading.Lock()
        self.last_sent: dict[object, float] = {}
        self.pending: set[object] = set()

    def __call__(self, key: object) -> None:
        with self.lock:
            if key in self.pending:
                return
            now = time.monotonic()
            wait = self.last_sent.get(key, now - self.interval) + self.interval - now
            if wait > 0:
                self.pending.add(key)
                self._later(wait, key)
                return
            self.last_sent[key] = now
        self.send(key)

    def _later(self, wait: float, key: object) -> None:
        loop = _server_loop() if self.send_async is not None else None
        if loop is None:
            timer = threading.Timer(wait, self.flush, (key,))
            timer.daemon = True
            timer.start()
            return

        def on_loop() -> None:
            self._mark_sent(key)
            loop.create_task(self.send_async(key))

        loop.call_soon_threadsafe(loop.call_later, wait, on_loop)

    def _mark_sent(self, key: object) -> None:
        with self.lock:
            self.pending.discard(key)
            self.last_sent[key] = time.monotonic()

    def flush(self, key: object) -> None:
        self._mark_sent(key)
        self.send(key)


_votes_cast = Coalescer(
    lambda experiment_id: experiment_changed(experiment_id, votes=True),
    VOTES_COALESCE_SECONDS,
    send_async=lambda experiment_id: experiment_changed_async(experiment_id, votes=True),
)


def votes_cast(experiment_id: int) -> None:
    """Tell live pages that an experiment has new votes: coalesced, see Coalescer."""
    _votes_cast(experiment_id)
