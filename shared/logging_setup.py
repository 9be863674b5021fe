"""Log set-up for every role: text for a person at a console, one JSON object a line for a log
pipeline (``log_format``), and the request id that ties a request's lines to its job's lines.

The request id lives in a context variable: the HTTP middleware sets it per request (anyio
copies the context into the thread pool, so sync routes see it), :func:`shared.jobs.new_job`
stores it on the job, and the worker sets it again while it runs that job.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Literal

REQUEST_ID_HEADER = "X-Request-ID"
# The key in ``Job.params`` a job's request id is stored under; the underscore marks it as the
# system's, not a parameter a client sent.
JOB_REQUEST_ID_KEY = "_request_id"
MAX_REQUEST_ID_CHARS = 128

request_id_var: ContextVar[str | None] = ContextVar("atelier_request_id", default=None)

# LogRecord attributes every record has; anything else was passed with ``extra=`` and belongs
# in the JSON object.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def new_request_id() -> str:
    return uuid.uuid4().hex


def clean_request_id(value: str | None) -> str | None:
    """An incoming id, kept only if short and printable: it is echoed into headers and logs."""
    if not value or len(value) > MAX_REQUEST_ID_CHARS or not value.isprintable():
        return None
    return value


def set_request_id(value: str | None) -> Token[str | None]:
    return request_id_var.set(value)


def reset_request_id(token: Token[str | None]) -> None:
    request_id_var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id and ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            out["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter(log_format: Literal["json", "text"]) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(log_format: Literal["json", "text"], level: str = "INFO") -> None:
    """Give the root logger one stderr handler in ``log_format`` (replacing the one a previous
    call installed, and leaving others, such as pytest's capture, alone)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_atelier", False):
            root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler._atelier = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO; the console's in-process calls to the API and the
    # gateway's calls to the recommender would each repeat a line the access log already has.
    # At DEBUG they are wanted.
    logging.getLogger("httpx").setLevel(
        logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    )
    if log_format == "json":
        # uvicorn's own text handlers would put non-JSON lines in the stream.
        for name in ("uvicorn", "uvicorn.error"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True


def use_format_on_existing_handlers(log_format: Literal["json", "text"]) -> None:
    """Celery installs its own handlers; give them our formatter instead of replacing them."""
    if log_format != "json":
        return
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())


# One line per request and per task: a logger each, so either can be filtered or silenced.
access_log = logging.getLogger("atelier.access")
task_log = logging.getLogger("atelier.task")


def log_request(
    *, method: str, route: str, status: int, started: float, tenant: str | None
) -> None:
    access_log.info(
        "%s %s %s",
        method,
        route,
        status,
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "tenant": tenant,
        },
    )
