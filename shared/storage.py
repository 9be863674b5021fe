"""Blob storage behind a small interface, chosen by URL scheme (``file://`` today).

Blobs are content-addressed by sha256: the same bytes uploaded twice are stored once, and a
key never changes meaning. Writes are atomic (temp file in the same directory, fsync, rename).

Sharing makes deletion race with writing: a writer that finds its bytes already stored skips
the write, and until it commits the asset row that points at them, a deleter that just removed
the last other reference sees none and deletes the file. Neither side locks; instead the
deleter sets the blob aside (an atomic rename), checks the references again on a fresh
connection, and only then discards it or puts it back; a writer, once its rows are committed,
checks that its blobs exist and writes any that went missing again (:func:`ensure_stored`).
Either the deleter's second check sees the writer's row, or the writer's check runs after the
blob was set aside and sees it gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlparse

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

CHUNK = 1 << 20


class PayloadTooLarge(ValueError):
    def __init__(self, limit: int):
        super().__init__(f"payload exceeds {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StoredBlob:
    key: str
    sha256: str
    size: int


class BlobStorage(Protocol):
    def put_stream(
        self, chunks: Iterable[bytes], *, max_bytes: int | None = None, durable: bool = True
    ) -> StoredBlob: ...

    def put_file(self, f: BinaryIO, *, max_bytes: int | None = None) -> StoredBlob: ...

    def put_bytes(self, data: bytes, *, durable: bool = True) -> StoredBlob: ...

    def open(self, key: str) -> BinaryIO: ...

    def path(self, key: str) -> Path: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def set_aside(self, key: str) -> str | None:
        """Take the blob out of reach; a token for :meth:`put_back` / :meth:`discard`, or None
        if it is not there."""
        ...

    def put_back(self, key: str, token: str) -> None: ...

    def discard(self, token: str) -> None: ...

    def recover_set_aside(self, older_than_s: float) -> int:
        """Put back blobs a crashed deleter left set aside (it cannot tell any more whether
        they are wanted; keeping one too many is the safe side). Returns how many."""
        ...

    def check(self) -> None: ...


class FileSystemStorage:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)

    def path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise KeyError(f"invalid blob key {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def put_stream(
        self, chunks: Iterable[bytes], *, max_bytes: int | None = None, durable: bool = True
    ) -> StoredBlob:
        """Store atomically under the content's sha256. ``durable=False`` skips the fsync, for
        data that can be made again if a crash loses it (a tagger's working copy)."""
        h = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(max_bytes)
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            key = h.hexdigest()
            dest = self.path(key)
            if dest.exists():
                tmp.unlink()
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
            return StoredBlob(key=key, sha256=key, size=size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_file(self, f: BinaryIO, *, max_bytes: int | None = None) -> StoredBlob:
        return self.put_stream(iter(lambda: f.read(CHUNK), b""), max_bytes=max_bytes)

    def put_bytes(self, data: bytes, *, durable: bool = True) -> StoredBlob:
        return self.put_stream([data], durable=durable)

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def set_aside(self, key: str) -> str | None:
        token = str(self.root / "tmp" / f"{key}.{uuid.uuid4().hex}.aside")
        try:
            os.rename(self.path(key), token)
        except FileNotFoundError:
            return None
        # Its age now says how long it has been aside (recover_set_aside goes by it).
        with contextlib.suppress(FileNotFoundError):
            os.utime(token)
        return token

    def put_back(self, key: str, token: str) -> None:
        # A writer may have stored the same bytes again meanwhile: replacing them is harmless.
        # Gone already: recover_set_aside put it back.
        with contextlib.suppress(FileNotFoundError):
            os.replace(token, self.path(key))

    def discard(self, token: str) -> None:
        Path(token).unlink(missing_ok=True)

    def recover_set_aside(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        restored = 0
        for aside in (self.root / "tmp").glob("*.aside"):
            with contextlib.suppress(FileNotFoundError):
                if aside.stat().st_mtime < cutoff:
                    dest = self.path(aside.name.split(".", 1)[0])
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(aside, dest)
                    restored += 1
        return restored

    def check(self) -> None:
        probe = self.root / "tmp" / f".probe.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        if shutil.disk_usage(self.root).free < 64 * CHUNK:
            raise OSError(f"less than 64 MiB free under {self.root}")


def open_storage(url: str) -> BlobStorage:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        # file://./var/blobs (relative) and file:///srv/blobs (absolute) are both accepted.
        return FileSystemStorage(Path(parsed.netloc + parsed.path).resolve())
    raise ValueError(f"unsupported storage URL scheme {parsed.scheme!r} in {url!r}")


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
