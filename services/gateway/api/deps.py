"""Typed dependencies, so route signatures read like sentences."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from shared.auth import lookup_key
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


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
StorageDep = Annotated[BlobStorage, Depends(get_storage)]
CeleryDep = Annotated[Celery, Depends(get_celery)]

_bearer = HTTPBearer(auto_error=False, description="an API key from `atelier keys create`")


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise ApiError(403, f"this API key lacks the {scope!r} scope", code="forbidden")


def get_principal(
    session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    challenge = {"WWW-Authenticate": "Bearer"}
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise ApiError(
            401, "missing API key: send `Authorization: Bearer <key>`", headers=challenge
        )
    key = lookup_key(session, plaintext=creds.credentials)
    if key is None:
        raise ApiError(401, "invalid or revoked API key", headers=challenge)
    return Principal(tenant_id=key.tenant_id, key_id=key.id, scopes=frozenset(key.scopes))


def reader(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require("read")
    return principal


def writer(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require("write")
    return principal


def admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    principal.require("admin")
    return principal


ReaderDep = Annotated[Principal, Depends(reader)]
WriterDep = Annotated[Principal, Depends(writer)]
AdminDep = Annotated[Principal, Depends(admin)]
