"""The Celery application object, shared by producers (gateway, beat) and workers."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from shared.config import WorkerSettings
from shared.tasks import (
    ALL_QUEUES,
    JOB_TYPES,
    QUEUE_GENERATION,
    QUEUE_TAGGING,
    QUEUE_TRAINING,
    RETRAIN_INTERVAL_S,
    RETRAIN_TAGGERS_TASK,
    SCHEDULE_RECOMMENDERS_TASK,
    SWEEP_TASK,
)


def create_celery(
    settings: WorkerSettings,
    *,
    include: list[str] | None = None,
    publish_timeout_s: float | None = None,
) -> Celery:
    """The Celery app; ``publish_timeout_s`` bounds each Redis command of a producer that must
    answer its caller (the gateway), so a stalled broker fails a publish instead of hanging it.
    Workers leave it unset: their consumer connection waits on Redis by design."""
    app = Celery("atelier", broker=settings.redis_url, include=include or [])
    timeouts: dict[str, float] = {"socket_connect_timeout": 3}
    if publish_timeout_s is not None:
        timeouts = {
            "socket_connect_timeout": publish_timeout_s,
            "socket_timeout": publish_timeout_s,
        }
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # The jobs table is the source of truth for results; no result backend to fill.
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        task_queues=[Queue(q) for q in ALL_QUEUES],
        task_default_queue=QUEUE_TAGGING,
        task_routes={
            **{jt.task: {"queue": jt.queue} for jt in JOB_TYPES.values()},
            SWEEP_TASK: {"queue": QUEUE_TAGGING},
            # Deliveries are short HTTP calls: keep them off the training queue.
            "atelier.deliver_webhook": {"queue": QUEUE_GENERATION},
        },
        # Unacked messages return to the queue after this long; it must outlast the longest
        # training job or a running job would be delivered twice.
        broker_transport_options={
            "visibility_timeout": settings.training_time_limit_s + 600,
            **timeouts,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=timeouts["socket_connect_timeout"],
        worker_hijack_root_logger=False,
        # The one beat schedule: every periodic task, whichever module defines it.
        beat_schedule={
            "sweep-jobs": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_s},
            "retrain-taggers": {
                "task": RETRAIN_TAGGERS_TASK,
                "schedule": RETRAIN_INTERVAL_S,
                "options": {"queue": QUEUE_TRAINING},
            },
            "train-recommenders": {
                "task": SCHEDULE_RECOMMENDERS_TASK,
                "schedule": RETRAIN_INTERVAL_S,
                "options": {"queue": QUEUE_TRAINING},
            },
        },
        timezone="UTC",
    )
    return app
