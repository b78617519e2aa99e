"""The Celery application: generation jobs run on the queue "gpu", one worker per accelerator."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("depth_arena")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_default_queue="gpu",
    task_routes={"evaluator.tasks.*": {"queue": "gpu"}},
    # A job is acknowledged only when it is finished, and a job whose worker died is handed out
    # again: tasks are idempotent, so running one twice produces nothing twice.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
)
app.autodiscover_tasks()


@signals.worker_process_init.connect
@signals.worker_init.connect
def use_plain_database_connections(**_: object) -> None:
    """Workers run one job at a time on one connection, so they gain nothing from Django's pool, and
    Celery's Django fix-up closes that pool after every task (celery#10554). Connect plainly instead;
    the web process keeps its pool. Django then checks a connection before reusing it.
    """
    from django.db import connections

    for alias in connections:
        connections[alias].close()
        settings_dict = connections[alias].settings_dict
        if settings_dict.get("OPTIONS", {}).pop("pool", None) is not None:
            settings_dict["CONN_HEALTH_CHECKS"] = True


import evaluator.heartbeat  # noqa: E402, F401  (worker heartbeats: connects the Celery worker signals)
