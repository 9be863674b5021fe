"""The Celery worker application: ``celery -A workers.celery_app worker -Q tagging``."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from celery.signals import (
    after_setup_logger,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)

from shared.config import worker_settings
from shared.queue import create_celery

# Metrics: tasks run in the prefork pool's child processes, each with its own counters, and
# children come and go (max-tasks-per-child, crashes); one HTTP server per child would need a
# port each and lose a dead child's counts. prometheus_client's multiprocess mode has every
# process write its values to files in one directory, which one server in the main process
# sums (_serve_metrics). The directory must be known before prometheus_client is imported,
# hence here, before the task modules load; a fresh one per start, so old counts never add up.
if worker_settings().metrics_port and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="atelier-metrics-")

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


@after_setup_logger.connect
def _log_format(**_: object) -> None:
    # Celery installs its own root handlers; in json mode they get the JSON formatter.
    from shared.logging_setup import use_format_on_existing_handlers

    use_format_on_existing_handlers(worker_settings().log_format)


@worker_init.connect
def _serve_metrics(**_: object) -> None:
    port = worker_settings().metrics_port
    if not port:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, registry=registry)


@worker_ready.connect
def _remember_pool(sender: Any, **_: object) -> None:
    from workers import shutdown

    shutdown.remember_pool(sender.pool)


@worker_shutting_down.connect
def _stop_training(how: str = "", **_: object) -> None:
    # Warm only: a cold shutdown kills the children anyway (workers/shutdown.py).
    if how == "Warm":
        from workers import shutdown

        shutdown.forward_to_children()


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
    from workers import shutdown

    shutdown.install_child_handler()
    logging.getLogger(__name__).debug("worker process %s ready", os.getpid())
