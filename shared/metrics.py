"""Prometheus metrics recorded by the workers, in prometheus_client's default registry.

The HTTP services keep theirs in a registry per app (``shared/http.py`` and their collectors);
these live in a worker's pool processes, which the worker's main process serves together
(``workers/celery_app.py``). Labels stay bounded: job types, final states, model kinds.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS_FINISHED = Counter(
    "atelier_jobs_finished",
    "Jobs a worker ran to an end, by type and final state (queued: stopped for shutdown)",
    ["type", "state"],
)
JOB_DURATION = Histogram(
    "atelier_job_duration_seconds",
    "Time a worker spent on a job, by type and final state",
    ["type", "state"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600),
)
INFERENCE_DURATION = Histogram(
    "atelier_inference_duration_seconds",
    "Time of one model call (a batch), by model kind",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INFERENCE_BATCH_SIZE = Histogram(
    "atelier_inference_batch_size",
    "Inputs in one model call, by model kind",
    ["kind"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
