"""Blob storage behind a small interface, chosen by URL scheme (``file://`` today).

Blobs are content-addressed by sha256: the same bytes uploaded twice are stored once, and a
key never changes meaning. Writes are atomic (temp file in the same directory, fsync, rename).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
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
    """Blobs are shared by content address; remove only those no asset points at any more."""
    if not keys:
        return
    from sqlalchemy import select

    from shared.db.models import Asset

    still = set(session.scalars(select(Asset.storage_key).where(Asset.storage_key.in_(keys))).all())
    for key in keys - still:
        storage.delete(key)
