"""Python client for the Atelier HTTP API: ``Atelier`` (sync) and ``AsyncAtelier`` (asyncio).

Every public route of the gateway has a method (``ROUTES`` maps each to them); errors raise
:class:`AtelierError` subclasses carrying the API's ``code``, ``message`` and HTTP ``status``.
"""

from __future__ import annotations

from atelier_client._http import RetryPolicy, routes_of
from atelier_client.aio import AsyncAtelier
from atelier_client.errors import (
    AtelierError,
    BadRequest,
    Conflict,
    Forbidden,
    JobFailed,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    ValidationError,
    WaitTimeout,
)
from atelier_client.files import CsvError, read_events
from atelier_client.sync import Atelier
from atelier_client.types import AsyncJob, ImportSummary, Job, UploadResult
from atelier_client.webhooks import InvalidSignature, parse_delivery, verify_signature

__version__ = "0.1.0"


def routes(
    client: type[Atelier] | type[AsyncAtelier] = Atelier,
) -> dict[tuple[str, str], list[str]]:
    """``(METHOD, path template) -> [Area.method, ...]`` for every route the client calls."""
    return routes_of(client, *client.AREAS)


__all__ = [
    "AsyncAtelier",
    "AsyncJob",
    "Atelier",
    "AtelierError",
    "BadRequest",
    "Conflict",
    "CsvError",
    "Forbidden",
    "ImportSummary",
    "InvalidSignature",
    "Job",
    "JobFailed",
    "NotFound",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "UploadResult",
    "ValidationError",
    "WaitTimeout",
    "parse_delivery",
    "read_events",
    "routes",
    "verify_signature",
]
