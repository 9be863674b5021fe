"""HTTP pieces shared by the gateway and the recommender: one error shape, request metrics.

Every 4xx/5xx body is ``{"error": {"code": "...", "message": "...", "details": ...}}``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.logging_setup import (
    REQUEST_ID_HEADER,
    clean_request_id,
    log_request,
    new_request_id,
    reset_request_id,
    set_request_id,
)
from shared.storage.base import StorageError, StorageFull

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
    507: "insufficient_storage",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code or STATUS_CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


def _json_safe(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        item = {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        out.append(item)
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _json_safe(list(exc.errors()))
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
        return JSONResponse(
            error_body("validation_error", f"{where}: {first['msg']}", errors), status_code=422
        )

    # Faults of what a service stands on (docs/reliability.md): the request was not applied,
    # and the caller hears which dependency failed instead of a 500.
    @app.exception_handler(StorageError)
    async def _storage_fault(request: Request, exc: StorageError) -> JSONResponse:
        log.warning("blob store fault on %s %s: %s", request.method, request.url.path, exc)
        if isinstance(exc, StorageFull):
            return JSONResponse(
                error_body("insufficient_storage", "the blob store is full; nothing was stored"),
                status_code=507,
            )
        return JSONResponse(
            error_body("storage_unavailable", "the blob store failed; nothing was stored"),
            status_code=503,
            headers={"Retry-After": "10"},
        )

    # Raw psycopg errors too: the hot paths (event COPY, recommender reads) skip the ORM.
    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg.InterfaceError)
    async def _database_fault(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database fault on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            error_body("database_unavailable", "the database is unavailable; retry shortly"),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", "internal server error; the request was not applied"),
            status_code=500,
        )


class RequestMetrics:
    """Latency histogram per route template (not raw path: ids would explode cardinality)."""

    def __init__(self, registry: CollectorRegistry, service: str):
        self.histogram = Histogram(
            "atelier_http_request_duration_seconds",
            "HTTP request latency",
            ["service", "method", "route", "status"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.service = service

    def install(self, app: FastAPI) -> None:
        app.add_middleware(_MetricsMiddleware, metrics=self)


class _MetricsMiddleware:
    """Plain ASGI: `@app.middleware("http")` adds a per-request cost in Starlette (see
    docs/perf.md). Besides the histogram it gives each request its id (the caller's
    ``X-Request-ID`` or a new one, echoed in the response) and writes its access log line."""

    def __init__(self, app: ASGIApp, *, metrics: RequestMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        incoming = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.lower().encode())
        request_id = (
            clean_request_id(incoming.decode("latin-1") if incoming else None) or new_request_id()
        )
        token = set_request_id(request_id)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or [])
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.histogram.labels(
                self.metrics.service, scope["method"], template, str(status)
            ).observe(time.perf_counter() - start)
            # Routes that authenticate put the tenant on request.state (scope["state"]).
            tenant = (scope.get("state") or {}).get("tenant_id")
            log_request(
                method=scope["method"], route=template, status=status, started=start, tenant=tenant
            )
            reset_request_id(token)


class BodySizeLimit:
    """Reject bodies over ``limit`` bytes with 413 while they stream in, before parsing."""

    def __init__(self, app: ASGIApp, *, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send, int(declared))
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, f"request body exceeds {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, send: Send, size: int) -> None:
        import json

        body = json.dumps(
            error_body(
                "payload_too_large", f"request body of {size} bytes exceeds {self.limit} bytes"
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})
