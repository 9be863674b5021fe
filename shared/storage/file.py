"""The file-system blob store (``file://``): a local directory or a volume shared by hosts.

Writes are atomic (temp file in the store's ``tmp/``, fsync, rename); setting a blob aside is a
rename into ``tmp/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlparse

from shared.storage.base import (
    CHUNK,
    BlobNotFound,
    PayloadTooLarge,
    StoredBlob,
    StreamPuts,
    blob_relpath,
    storage_error,
)

if TYPE_CHECKING:
    from shared.config import CommonSettings


class FileSystemStorage(StreamPuts):
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / blob_relpath(key)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def put_stream(
        self, chunks: Iterable[bytes], *, max_bytes: int | None = None, durable: bool = True
    ) -> StoredBlob:
        """Store atomically under the content's sha256. ``durable=False`` skips the fsync, for
        data that can be made again if a crash loses it (a tagger's working copy)."""
        h = hashlib.sha256()
        size = 0
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp", suffix=".part")
        except OSError as exc:
            raise storage_error(exc, f"cannot write under {self.root}") from exc
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
        except BaseException as exc:
            # Nothing half-written stays behind: the temp file goes whatever went wrong.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise storage_error(exc, f"cannot write under {self.root}") from exc
            raise

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(f"no blob {key}") from exc

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


def open_file_storage(url: str, settings: CommonSettings | None = None) -> FileSystemStorage:
    parsed = urlparse(url)
    # file://./var/blobs (relative) and file:///srv/blobs (absolute) are both accepted.
    return FileSystemStorage(Path(parsed.netloc + parsed.path).resolve())
