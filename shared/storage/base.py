"""The blob storage interface, its errors and keys, and the registry of backends by URL scheme."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlparse

if TYPE_CHECKING:
    from shared.config import CommonSettings

CHUNK = 1 << 20


class PayloadTooLarge(ValueError):
    def __init__(self, limit: int):
        super().__init__(f"payload exceeds {limit} bytes")
        self.limit = limit


class InvalidBlobKey(KeyError):
    """A key that is not a sha256 hex digest (never reaches the file system or the bucket)."""


class StorageError(OSError):
    """The store cannot be reached or refused a request (credentials, bucket, network)."""


class StorageFull(StorageError):
    """The store has no room left (ENOSPC, EDQUOT): the caller is told 507, not to retry soon."""


def storage_error(exc: OSError, what: str) -> StorageError:
    """A backend's own ``OSError`` as the store's error: :class:`StorageFull` when it is out of
    room, else :class:`StorageError` (read-only, I/O error, permissions)."""
    if isinstance(exc, StorageError):
        return exc
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return (StorageFull if full else StorageError)(exc.errno, f"{what}: {exc.strerror or exc}")


class BlobNotFound(FileNotFoundError):
    """No blob under this key. A ``FileNotFoundError``, as the file backend has always raised."""


@dataclass(frozen=True)
class StoredBlob:
    key: str
    sha256: str
    size: int


def blob_relpath(key: str) -> str:
    """Where a blob lives below a store's root: ``ab/cd/abcd...`` (the same in every backend,
    so a file store can be copied into a bucket as it is)."""
    if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
        raise InvalidBlobKey(f"invalid blob key {key!r}")
    return f"{key[:2]}/{key[2:4]}/{key}"


class StreamPuts:
    """``put_file`` and ``put_bytes`` in terms of ``put_stream``: the same for every backend."""

    def put_stream(
        self, chunks: Iterable[bytes], *, max_bytes: int | None = None, durable: bool = True
    ) -> StoredBlob:
        raise NotImplementedError

    def put_file(self, f: BinaryIO, *, max_bytes: int | None = None) -> StoredBlob:
        return self.put_stream(iter(lambda: f.read(CHUNK), b""), max_bytes=max_bytes)

    def put_bytes(self, data: bytes, *, durable: bool = True) -> StoredBlob:
        return self.put_stream([data], durable=durable)


class BlobStorage(Protocol):
    def put_stream(
        self, chunks: Iterable[bytes], *, max_bytes: int | None = None, durable: bool = True
    ) -> StoredBlob: ...

    def put_file(self, f: BinaryIO, *, max_bytes: int | None = None) -> StoredBlob: ...

    def put_bytes(self, data: bytes, *, durable: bool = True) -> StoredBlob: ...

    def open(self, key: str) -> BinaryIO:
        """The blob's bytes as a stream; :class:`BlobNotFound` if there is none."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The blob's file, for backends that keep one on this host (served with sendfile);
        None for remote ones, which are read through :meth:`open`."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the blob; no error if it is not there."""
        ...

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


# scheme -> factory(url, settings); settings carry a remote backend's endpoint and credentials.
StorageFactory = Callable[[str, "CommonSettings | None"], BlobStorage]
_BACKENDS: dict[str, StorageFactory] = {}


def register_backend(scheme: str, factory: StorageFactory) -> None:
    _BACKENDS[scheme] = factory


def open_storage(url: str, settings: CommonSettings | None = None) -> BlobStorage:
    """The store at ``url`` (``file://...``, ``s3://bucket/prefix``). ``settings`` give the S3
    endpoint and credentials; without them boto3's own configuration (``AWS_*``) applies."""
    scheme = urlparse(url).scheme
    factory = _BACKENDS.get(scheme)
    if factory is None:
        raise ValueError(f"unsupported storage URL scheme {scheme!r} in {url!r}")
    return factory(url, settings)
