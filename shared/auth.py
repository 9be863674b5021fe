"""Tenants and API keys. Only a SHA-256 of each key is stored; the key is shown once.

Keys are 32 random bytes, so a fast hash is enough: there is nothing to brute-force, unlike a
password, and per-request verification must stay cheap.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import ApiKey, Tenant

KEY_PREFIX = "atl_"
SCOPES = ("read", "write", "admin")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_tenant(session: Session, *, name: str) -> Tenant:
    tenant = Tenant(name=name)
    session.add(tenant)
    session.commit()
    return tenant


def get_tenant(session: Session, *, name_or_id: str) -> Tenant | None:
    return session.scalars(
        select(Tenant).where((Tenant.id == name_or_id) | (Tenant.name == name_or_id))
    ).first()


def create_api_key(
    session: Session, *, tenant_id: str, scopes: list[str], name: str = ""
) -> tuple[ApiKey, str]:
    """Return the row and the plaintext key (never stored)."""
    bad = sorted(set(scopes) - set(SCOPES))
    if bad or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {SCOPES}, got {scopes}")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        tenant_id=tenant_id,
        name=name,
        prefix=plaintext[: len(KEY_PREFIX) + 6],
        key_hash=hash_key(plaintext),
        scopes=sorted(set(scopes)),
    )
    session.add(row)
    session.commit()
    return row, plaintext


def lookup_key(session: Session, *, plaintext: str) -> ApiKey | None:
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(plaintext))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row


def revoke_key(session: Session, *, key_id: str) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None:
        return False
    row.revoked_at = datetime.now(UTC)
    session.commit()
    return True
