"""Deleting a shared blob while a writer stores the same bytes loses nothing (shared/storage.py):
whichever way the two interleave, the blob is there once the writer's row is committed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from shared.auth import create_tenant
from shared.db.models import Asset, ContentItem, ContentKind
from shared.db.session import session_scope
from shared.storage import FileSystemStorage, delete_unreferenced_blobs, ensure_stored


@pytest.fixture
def photo() -> bytes:
    # Bytes of each test's own: the database is shared by the session's tests.
    return b"\xff\xd8\xff" + uuid.uuid4().bytes * 1000


@pytest.fixture
def storage(tmp_path: Path) -> FileSystemStorage:
    return FileSystemStorage(tmp_path / "blobs")


@pytest.fixture
def tenant(sqlite_url: str) -> Iterator[str]:
    with session_scope(sqlite_url) as s:
        yield create_tenant(s, name=f"race-{uuid.uuid4().hex[:8]}").id


def _item(s: Session, tenant: str, storage: FileSystemStorage, photo: bytes) -> tuple[str, str]:
    """An item whose original is ``photo``, committed; (item id, blob key)."""
    blob = storage.put_bytes(photo)
    item = ContentItem(tenant_id=tenant, kind=ContentKind.image)
    item.assets.append(Asset.stored(blob, role="original", mime_type="image/jpeg", width=1,
                                    height=1))  # fmt: skip
    s.add(item)
    s.commit()
    return item.id, blob.key


def _delete(s: Session, storage: FileSystemStorage, item_id: str, key: str) -> None:
    item = s.get(ContentItem, item_id)
    assert item is not None
    s.delete(item)
    s.commit()
    delete_unreferenced_blobs(s, storage, {key})


def test_writer_committing_while_the_blob_is_aside_gets_it_back(
    sqlite_url: str,
    storage: FileSystemStorage,
    tenant: str,
    photo: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with session_scope(sqlite_url) as deleter, session_scope(sqlite_url) as writer:
        a, key = _item(deleter, tenant, storage, photo)
        # The writer finds the bytes stored already and skips the write...
        blob = storage.put_bytes(photo)
        assert blob.key == key
        set_aside = storage.set_aside

        def writer_commits_meanwhile(k: str) -> str | None:
            token = set_aside(k)
            # ...and commits its row after the deleter's first check, before its second.
            item = ContentItem(tenant_id=tenant, kind=ContentKind.image)
            item.assets.append(Asset.stored(blob, role="original", mime_type="image/jpeg",
                                            width=1, height=1))  # fmt: skip
            writer.add(item)
            writer.commit()
            return token

        monkeypatch.setattr(storage, "set_aside", writer_commits_meanwhile)
        _delete(deleter, storage, a, key)
        assert storage.exists(key)
        assert storage.open(key).read() == photo
        assert ensure_stored(storage, [(key, lambda: photo)]) == 0
        assert not list((storage.root / "tmp").iterdir())


def test_writer_committing_after_the_delete_writes_the_blob_again(
    sqlite_url: str, storage: FileSystemStorage, tenant: str, photo: bytes
) -> None:
    with session_scope(sqlite_url) as deleter, session_scope(sqlite_url) as writer:
        a, key = _item(deleter, tenant, storage, photo)
        assert storage.put_bytes(photo).key == key  # found stored: not written
        _delete(deleter, storage, a, key)  # no reference committed yet: deleted
        assert not storage.exists(key)
        item = ContentItem(tenant_id=tenant, kind=ContentKind.image)
        item.assets.append(Asset(role="original", storage_key=key, sha256=key,
                                 mime_type="image/jpeg", byte_size=len(photo)))  # fmt: skip
        writer.add(item)
        writer.commit()
        # What every writer does after committing: the blob is back, with the same bytes.
        assert ensure_stored(storage, [(key, lambda: photo)]) == 1
        assert storage.open(key).read() == photo
        with pytest.raises(ValueError, match="hash to"):
            ensure_stored(storage, [("0" * 64, lambda: photo)])


def test_unshared_blob_is_deleted_and_a_shared_one_kept(
    sqlite_url: str, storage: FileSystemStorage, tenant: str, photo: bytes
) -> None:
    with session_scope(sqlite_url) as s:
        a, key = _item(s, tenant, storage, photo)
        b, _ = _item(s, tenant, storage, photo)
        _delete(s, storage, a, key)
        assert storage.exists(key)  # b still points at it
        _delete(s, storage, b, key)
        assert not storage.exists(key)
        assert not list((storage.root / "tmp").iterdir())


def test_a_blob_left_aside_by_a_crashed_deleter_is_put_back(
    storage: FileSystemStorage, photo: bytes
) -> None:
    key = storage.put_bytes(photo).key
    token = storage.set_aside(key)
    assert token is not None and not storage.exists(key)
    assert storage.set_aside(key) is None  # nothing left to take
    assert storage.recover_set_aside(older_than_s=3600) == 0  # a live deleter is still deciding
    assert storage.recover_set_aside(older_than_s=0) == 1
    assert storage.open(key).read() == photo
    storage.put_back(key, token)  # the deleter, late: no error, still there
    assert storage.exists(key)
