"""The HTTP layer both clients share: a request description, retries, and the route table.

Every public method that calls a route is marked with :func:`route`; ``routes_of(Atelier)``
lists what a client covers, and a test compares that with the gateway's OpenAPI.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx

from atelier_client.errors import AtelierError, Unavailable, error_from_response, retry_after

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "atelier-client/0.1"
# Retrying these can change nothing twice; POST is retried only when the server refused it.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_ANY = frozenset({429, 503})
RETRY_IDEMPOTENT = frozenset({502, 504})

F = TypeVar("F", bound=Callable[..., Any])


def route(method: str, path: str) -> Callable[[F], F]:
    """Mark a client method as the caller of ``METHOD path`` (the OpenAPI path template)."""

    def mark(fn: F) -> F:
        fn.__atelier_route__ = (method.upper(), path)  # type: ignore[attr-defined]
        return fn

    return mark


def routes_of(*classes: type) -> dict[tuple[str, str], list[str]]:
    """``(method, path) -> [Class.method, ...]`` over the given classes and their bases."""
    out: dict[tuple[str, str], list[str]] = {}
    for cls in classes:
        for klass in cls.__mro__:
            for name, fn in vars(klass).items():
                key = getattr(fn, "__atelier_route__", None)
                if key is not None:
                    out.setdefault(key, []).append(f"{klass.__name__}.{name}")
    return out


def seg(value: str) -> str:
    """One path segment: ids and tag names may hold spaces, slashes or colons."""
    return quote(str(value), safe="")


Expect = Literal["json", "bytes", "text", "none"]


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    expect: Expect = "json"

    def kwargs(self) -> dict[str, Any]:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        kw: dict[str, Any] = {"params": params}
        if self.json is not None:
            kw["json"] = self.json
        if self.data is not None:
            kw["data"] = self.data
        if self.files is not None:
            kw["files"] = self.files
        return kw


@dataclass
class RetryPolicy:
    """How often and how long to retry.

    Idempotent calls (GET, PUT, DELETE) are retried on 429, 502, 503, 504 and network errors;
    any call on 429 and 503 (the server did not act on it) and when no connection was made.
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    # A Retry-After longer than this is not waited for: the error is raised at once.
    max_retry_after_s: float = 60.0

    def delay(
        self, attempt: int, method: str, response: httpx.Response | None, error: Exception | None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to stop."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            status = response.status_code
            if status not in RETRY_ANY and not (
                status in RETRY_IDEMPOTENT and method in IDEMPOTENT
            ):
                return None
            told = retry_after(response)
            if told is not None:
                return told if told <= self.max_retry_after_s else None
        elif not (
            isinstance(error, httpx.ConnectError | httpx.ConnectTimeout) or method in IDEMPOTENT
        ):
            return None
        # Full jitter: clients that failed together do not come back together.
        cap = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return random.uniform(cap / 2, cap)


def _decode(call: Call, response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_from_response(response)
    if call.expect == "none" or response.status_code == 204:
        return None
    if call.expect == "bytes":
        return response.content
    if call.expect == "text":
        return response.text
    return response.json()


def _network_error(exc: Exception) -> AtelierError:
    return Unavailable(f"{type(exc).__name__}: {exc}", code="connection_error")


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    url = (base_url or os.environ.get("ATELIER_URL") or DEFAULT_URL).rstrip("/")
    key = api_key if api_key is not None else os.environ.get("ATELIER_API_KEY")
    headers = {"user-agent": USER_AGENT}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return url, headers


@dataclass
class SyncTransport:
    client: httpx.Client
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def build(
        cls,
        base_url: str | None,
        api_key: str | None,
        *,
        timeout: float,
        retry: RetryPolicy,
        transport: httpx.BaseTransport | None,
    ) -> SyncTransport:
        url, headers = _settings(base_url, api_key)
        client = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)
        return cls(client, retry)

    def send(self, call: Call) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = self.client.request(call.method, call.path, **call.kwargs())
            except httpx.TransportError as exc:
                error = exc
            wait = self.retry.delay(attempt, call.method, response, error)
            if wait is None:
                if response is None:
                    raise _network_error(error) from error  # type: ignore[arg-type]
                return _decode(call, response)
            attempt += 1
            self.sleep(wait)

    def close(self) -> None:
        self.client.close()


@dataclass
class AsyncTransport:
    client: httpx.AsyncClient
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def build(
        cls,
        base_url: str | None,
        api_key: str | None,
        *,
        timeout: float,
        retry: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None,
    ) -> AsyncTransport:
        url, headers = _settings(base_url, api_key)
        client = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )
        return cls(client, retry)

    async def send(self, call: Call) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self.client.request(call.method, call.path, **call.kwargs())
            except httpx.TransportError as exc:
                error = exc
            wait = self.retry.delay(attempt, call.method, response, error)
            if wait is None:
                if response is None:
                    raise _network_error(error) from error  # type: ignore[arg-type]
                return _decode(call, response)
            attempt += 1
            await asyncio.sleep(wait)

    async def close(self) -> None:
        await self.client.aclose()


def drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def as_list(values: str | Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)
