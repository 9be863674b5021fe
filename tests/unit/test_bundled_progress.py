"""What a person starting the suite sees: build progress lines, and no routine Celery chatter."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.bundled import BuildWatcher, describe, progress_details
from shared.db.models import Job, JobStatus


def _job(model: str = "text_generator", **fields: Any) -> Job:
    values: dict[str, Any] = {
        "id": "job-1",
        "type": "build_bundled_model",
        "queue": "training",
        "status": JobStatus.running,
        "progress": 0.0,
        "params": {"model": model},
        "result": {},
    }
    return Job(**{**values, **fields})


def test_running_lines_show_stage_percent_and_latest_numbers() -> None:
    text = _job(progress=0.4, result={"stage": "training", "val_bpc": 2.6149})
    assert describe(text) == "text generator: training 40% (val 2.61 bits/char)"
    gan = _job("image_generator", progress=0.5, result={"stage": "training", "step": 800,
                                                        "steps": 1600})  # fmt: skip
    assert describe(gan) == "image generator: training 50% (step 800/1600)"
    assert describe(_job(status=JobStatus.queued)).startswith("text generator: build queued")


def test_final_lines_say_how_long_and_how_good() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    done = _job(status=JobStatus.succeeded, progress=1.0, started_at=start,
                finished_at=start + timedelta(seconds=361),
                result={"metrics": {"val_bpc": 2.357, "ngram_val_bpc": 2.26}})  # fmt: skip
    assert describe(done) == "text generator: ready in 6m01s (val 2.36 bits/char; n-gram 2.26)"
    mixed = _job(status=JobStatus.succeeded, progress=1.0,
                 result={"metrics": {"val_bpc": 2.357, "ngram_val_bpc": 2.26,
                                     "mixture_val_bpc": 2.2}})  # fmt: skip
    assert describe(mixed).endswith("(val 2.36 bits/char; n-gram 2.26; served mixture 2.20)")
    failed = _job(status=JobStatus.failed, error="no fortune files")
    assert "build failed: no fortune files" in describe(failed)


def test_watcher_prints_once_per_stage_and_tenth_of_progress() -> None:
    lines: list[str] = []
    watcher = BuildWatcher(job_ids=["job-1"], say=lines.append)
    states = [
        (JobStatus.queued, 0.0, {}),
        (JobStatus.running, 0.0, {"stage": "preparing data"}),
        (JobStatus.running, 0.0, {"stage": "training"}),
        (JobStatus.running, 0.03, {"stage": "training"}),  # same tenth: no line
        (JobStatus.running, 0.12, {"stage": "training"}),
        (JobStatus.running, 0.19, {"stage": "training"}),  # same tenth: no line
        (JobStatus.running, 0.35, {"stage": "training", "val_bpc": 2.7}),
        (JobStatus.succeeded, 1.0, {"stage": "ready", "metrics": {"val_bpc": 2.5}}),
    ]
    for status, progress, result in states:
        text = watcher.line(_job(status=status, progress=progress, result=result))
        if text is not None:
            lines.append(text)
    assert lines == [
        "text generator: build queued for the build worker",
        "text generator: preparing data 0%",
        "text generator: training 0%",
        "text generator: training 12%",
        "text generator: training 35% (val 2.70 bits/char)",
        "text generator: ready (val 2.50 bits/char)",
    ]


def test_progress_details_are_what_a_client_polls() -> None:
    job = _job(progress=0.4567, result={"stage": "training"})
    assert progress_details(job) == {
        "job_id": "job-1",
        "model": "text_generator",
        "status": "running",
        "stage": "training",
        "progress": 0.457,
    }


@pytest.fixture
def trace_logger() -> Any:
    from workers.celery_app import RoutineToDebug  # noqa: F401  (installs the filters)

    logger = logging.getLogger("celery.app.trace")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, records
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    logger.propagate = old_propagate


def test_routine_task_lines_go_to_debug(trace_logger: Any) -> None:
    from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

    logger, records = trace_logger
    ctx = {"name": "atelier.sweep_jobs", "id": "x", "runtime": 0.01, "return_value": {}}
    logger.setLevel(logging.INFO)
    logger.info(LOG_SUCCESS, ctx)
    logger.info(LOG_RECEIVED, ctx)
    logger.error("Task %(name)s[%(id)s] raised unexpected: %(exc)s", {**ctx, "exc": "boom"})
    assert [r.levelname for r in records] == ["ERROR"]
    logger.setLevel(logging.DEBUG)
    logger.info(LOG_SUCCESS, ctx)
    assert records[-1].levelname == "DEBUG"
