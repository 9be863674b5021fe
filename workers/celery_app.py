"""The Celery worker application: ``celery -A workers.celery_app worker -Q tagging``."""

from __future__ import annotations

import logging
import os

from celery.signals import worker_process_init

from shared.config import worker_settings
from shared.queue import create_celery

app = create_celery(
    worker_settings(),
    include=[
        "workers.tagging.tasks",
        "workers.maintenance",
        "workers.training.recommender",
        "workers.training.taggers",
        "workers.generation.tasks",
        "workers.training.generators",
        "workers.training.bundled",
        "workers.webhooks",
    ],
)


class RoutineToDebug(logging.Filter):
    """Logs Celery's per-task and per-tick INFO lines at DEBUG instead.

    A beat tick every 30 s and a received/succeeded pair per task would bury what a person
    running the suite needs to see (failures, retries, build progress). Records are matched by
    their message template, so everything else those loggers say keeps its level.
    """

    ROUTINE = ("Task %(name)s[%(id)s] received", "Task %(name)s[%(id)s] succeeded",
               "Scheduler: Sending due task")  # fmt: skip

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not str(record.msg).startswith(self.ROUTINE):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        # Logger filters run after the level check, which passed at INFO: check DEBUG here.
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


# celery.worker.strategy logs "received", celery.app.trace "succeeded", celery.beat the ticks.
for _name in ("celery.worker.strategy", "celery.app.trace", "celery.beat"):
    logging.getLogger(_name).addFilter(RoutineToDebug())


@worker_process_init.connect
def _init_process(**_: object) -> None:
    # Each prefork child gets fresh DB connections and a model registry of its own; BLAS
    # threads are capped so processes x threads stays within the cores (see docs/perf.md).
    from threadpoolctl import threadpool_limits

    from shared.db.session import get_engine
    from workers.context import reset_context

    threads = worker_settings().ort_threads
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    # The tokenizers library otherwise spawns a thread per core in every worker process.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threadpool_limits(threads)
    get_engine.cache_clear()
    reset_context()
    logging.getLogger(__name__).debug("worker process %s ready", os.getpid())
