"""Typed dependencies, so route signatures read like sentences."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import anyio
from celery import Celery
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.rate_limit import RateLimiter
from services.gateway.similar import SimilarIndex
from shared.auth import hash_key, lookup_key
from shared.config import GatewaySettings
from shared.http import ApiError
from shared.storage import BlobStorage


def get_db(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def get_storage(request: Request) -> BlobStorage:
    return request.app.state.storage


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_decode_limiter(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.decode_limiter


def get_similar_index(request: Request) -> SimilarIndex:
    return request.app.state.similar


SessionDep = Annotated[Session, Depends(get_db)]
DecodeLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_decode_limiter)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
StorageDep = Annotated[BlobStorage, Depends(get_storage)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
SimilarIndexDep = Annotated[SimilarIndex, Depends(get_similar_index)]

_bearer = HTTPBearer(auto_error=False, description="an API key from `atelier keys create`")


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise ApiError(403, f"this API key lacks the {scope!r} scope", code="forbidden")


class KeyCache:
    """Recently verified keys, so the hot path skips a database round trip per request.

    Only valid keys are cached (random keys cannot grow it), for ``ttl`` seconds: a revoked
    key keeps working for at most that long on each gateway process.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, key_hash: str) -> Principal | None:
        hit = self._entries.get(key_hash)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self.ttl, principal)


def _lookup(sessionmaker: sessionmaker[Session], plaintext: str) -> Principal | None:
    with sessionmaker() as session:
        key = lookup_key(session, plaintext=plaintext)
        if key is None:
            return None
        return Principal(tenant_id=key.tenant_id, key_id=key.id, scopes=frozenset(key.scopes))


async def get_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # async, with the database call pushed to a thread only on a cache miss: a sync dependency
    # costs a thread-pool hop on every request.
    challenge = {"WWW-Authenticate": "Bearer"}
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise ApiError(
            401, "missing API key: send `Authorization: Bearer <key>`", headers=challenge
        )
    cache: KeyCache = request.app.state.key_cache
    key_hash = hash_key(creds.credentials)
    principal = cache.get(key_hash)
    if principal is None:
        principal = await run_in_threadpool(
            _lookup, request.app.state.sessionmaker, creds.credentials
        )
        if principal is None:
            raise ApiError(401, "invalid or revoked API key", headers=challenge)
        cache.put(key_hash, principal)
    # For the access log line, written by the middleware once the response is sent.
    request.state.tenant_id = principal.tenant_id
    # Every authenticated route depends on this, so every one is rate limited.
    limiter: RateLimiter = request.app.state.rate_limiter
    refusal = await limiter.check(key_id=principal.key_id, tenant_id=principal.tenant_id)
    if refusal is not None:
        raise ApiError(
            429,
            f"too many requests for this {refusal.scope}; retry in {refusal.retry_after_s} s",
            headers={"Retry-After": str(refusal.retry_after_s)},
            details={"limit": refusal.scope, "retry_after_s": refusal.retry_after_s},
        )
    return principal


async def reader(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require("read")
    return principal


async def writer(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require("write")
    return principal


async def admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require("admin")
    return principal


ReaderDep = Annotated[Principal, Depends(reader)]
WriterDep = Annotated[Principal, Depends(writer)]
AdminDep = Annotated[Principal, Depends(admin)]
