"""Events sent over the channel layer when experiments move, for live pages (results, jobs)."""

import logging
import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

JOBS_GROUP = "jobs"


def experiment_group(experiment_id: int) -> str:
    return f"experiment-{experiment_id}"


def experiment_changed(experiment_id: int, **detail: object) -> None:
    """Tell live pages that an experiment's generations or votes changed; never fails the caller."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "experiment.changed", "experiment": experiment_id, **detail}
    try:
        async_to_sync(layer.group_send)(experiment_group(experiment_id), message)
        async_to_sync(layer.group_send)(JOBS_GROUP, message)
    except Exception:
        # Live updates are a convenience: pages fall back to polling, the stored data is what counts.
        log.warning("could not publish a change of experiment %s", experiment_id, exc_info=True)


VOTES_COALESCE_SECONDS = 0.5


class Coalescer:
    """Sends at most one event per key per interval from this process: the first at once, and any that
    come within the interval folded into one sent when it ends (from a timer thread).

    A busy experiment takes dozens of votes a second, and each event costs the voter's request two
    round trips to the channel layer. The pages re-fetch at most once a second anyway, so one event
    per half second loses nothing they show, and the last vote is always announced.
    """

    def __init__(self, send, interval: float) -> None:
        self.send, self.interval = send, interval
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
                timer = threading.Timer(wait, self.flush, (key,))
                timer.daemon = True
                timer.start()
                return
            self.last_sent[key] = now
        self.send(key)

    def flush(self, key: object) -> None:
        with self.lock:
            self.pending.discard(key)
            self.last_sent[key] = time.monotonic()
        self.send(key)


_votes_cast = Coalescer(
    lambda experiment_id: experiment_changed(experiment_id, votes=True), VOTES_COALESCE_SECONDS
)


def votes_cast(experiment_id: int) -> None:
    """Tell live pages that an experiment has new votes: coalesced, see Coalescer."""
    _votes_cast(experiment_id)
