"""Deleting shared blobs safely, and writing back those a concurrent delete took (see the
package docstring); the same for every backend, through the :class:`BlobStorage` interface."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from shared.storage.base import BlobStorage, StoredBlob

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def delete_unreferenced_blobs(session: Session, storage: BlobStorage, keys: set[str]) -> None:
    """Blobs are shared by content address; remove only those no asset points at any more,
    safely against a writer storing the same bytes meanwhile (see the module docstring).
    Call it after committing the change that dropped the references."""
    if not keys:
        return
    from sqlalchemy import select

    from shared.db.models import Asset

    engine = session.get_bind().engine

    def referenced(candidates: set[str]) -> set[str]:
        # A connection of its own, so each check sees what is committed now (the session may
        # hold an older snapshot).
        with engine.connect() as conn:
            query = select(Asset.storage_key).where(Asset.storage_key.in_(candidates))
            return set(conn.scalars(query))

    aside = {}
    for key in keys - referenced(keys):
        token = storage.set_aside(key)
        if token is not None:
            aside[key] = token
    if not aside:
        return
    wanted = referenced(set(aside))
    for key, token in aside.items():
        if key in wanted:
            storage.put_back(key, token)
        else:
            storage.discard(token)


# A stored blob's key and a way to make its bytes again, for ensure_stored.
BlobSource = tuple[str, Callable[[], bytes]]


def put_remembered(storage: BlobStorage, data: bytes, written: list[BlobSource]) -> StoredBlob:
    """``put_bytes``, noting the blob in ``written`` for :func:`ensure_stored` once the rows
    that point at it are committed."""
    blob = storage.put_bytes(data)
    written.append((blob.key, lambda: data))
    return blob


def ensure_stored(storage: BlobStorage, blobs: Iterable[BlobSource]) -> int:
    """After committing rows that point at ``blobs`` (key, bytes-maker): write again any that a
    concurrent delete took away. Returns how many were written."""
    written = 0
    for key, data in blobs:
        if not storage.exists(key):
            stored = storage.put_bytes(data())
            if stored.key != key:
                raise ValueError(f"bytes for blob {key} hash to {stored.key}")
            written += 1
    return written
