"""Events sent over the channel layer when experiments move, for live pages (results, jobs)."""

import logging

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
