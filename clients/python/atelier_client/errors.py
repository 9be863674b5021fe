"""Exceptions for the API's error shape ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import json
from typing import Any

import httpx


class AtelierError(Exception):
    """An error answer of the API (or no answer at all: ``status`` is None then)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        details: Any = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"


class BadRequest(AtelierError):
    """400."""


class Unauthorized(AtelierError):
    """401: no key, an unknown or a revoked one."""


class Forbidden(AtelierError):
    """403: the key lacks the scope, or the object cannot be changed (a system job)."""


class NotFound(AtelierError):
    """404: unknown id, or another tenant's."""


class Conflict(AtelierError):
    """409: a duplicate external_id (``details["id"]`` is the existing item), too many webhooks."""


class ValidationError(AtelierError):
    """413, 415, 422: the request was refused as it is; sending it again will not help."""


class RateLimited(AtelierError):
    """429; ``retry_after`` in seconds when the server said."""


class Unavailable(AtelierError):
    """502, 503, 504, or no connection: try later (``retry_after`` when the server said)."""


class ServerError(AtelierError):
    """500 and other 5xx."""


class JobFailed(AtelierError):
    """A waited-for job ended ``failed`` or ``cancelled``; ``job`` holds it."""

    def __init__(self, job: Any):
        super().__init__(
            f"job {job.id} ({job.type}) ended {job.status}: {job.error or ''}".rstrip(": "),
            code=f"job_{job.status}",
            details={"job_id": job.id},
        )
        self.job = job


class WaitTimeout(AtelierError, TimeoutError):
    """A job did not reach a final state in time; ``job`` is its last seen state."""

    def __init__(self, job: Any, timeout: float):
        super().__init__(
            f"job {job.id} still {job.status} ({job.progress:.0%}) after {timeout:g}s",
            code="wait_timeout",
            details={"job_id": job.id},
        )
        self.job = job


_BY_STATUS: dict[int, type[AtelierError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: ValidationError,
    415: ValidationError,
    422: ValidationError,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form too, since proxies send it."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(response: httpx.Response) -> AtelierError:
    code, message, details = "", "", None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or "")
        message = str(err.get("message") or "")
        details = err.get("details")
    elif body is not None:
        # A body of another shape (a failed generation job answers 422 with the job): keep it.
        details = body
    status = response.status_code
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else AtelierError)
    return cls(
        message or response.reason_phrase or f"HTTP {status}",
        status=status,
        code=code or f"http_{status}",
        details=details,
        retry_after=retry_after(response),
    )
