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
        "workers.webhooks",
    ],
)


@worker_process_init.connect
def _init_process(**_: object) -> None:
    # Each prefork child gets fresh DB connections and a model registry of its own; BLAS
    # threads are capped so processes x threads stays within the cores (see NOTES.md).
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
    logging.getLogger(__name__).info("worker process %s ready", os.getpid())
