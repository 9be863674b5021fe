"""The S3 blob store (``s3://bucket/prefix``): AWS S3 or any service that speaks its API.

The same guarantees as the file store, from S3's own: a PUT is atomic (the object appears whole
or not at all) and reads are strongly consistent (AWS since 2020; MinIO, Ceph). Blobs live under
``<prefix>/ab/cd/<sha256>``, as in a file store, so one can be copied into a bucket as it is.
Setting a blob aside copies it to ``<prefix>/tmp/<key>.<uuid>.aside`` and then deletes it: the
delete is the one instant at which the blob leaves its key, which is all that the deleter and
writer protocol of ``shared.storage`` needs.

boto3 is imported here only, and this module only when an ``s3://`` URL is opened.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TypeVar, cast
from urllib.parse import urlparse

from shared.storage.base import (
    CHUNK,
    BlobNotFound,
    PayloadTooLarge,
    StorageError,
    StoredBlob,
    StreamPuts,
    blob_relpath,
)

if TYPE_CHECKING:
    from shared.config import CommonSettings

# Uploads up to this size are hashed in memory, larger ones spill to a temp file first (the
# key is the hash, so the bytes must be seen whole before the PUT).
SPOOL_BYTES = 8 * CHUNK
_MISSING = {"404", "NoSuchKey", "NotFound"}
T = TypeVar("T")


@dataclass(frozen=True)
class S3Endpoint:
    """Where and as whom to reach the S3 API; None fields are left to boto3 (``AWS_*``)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    addressing_style: str = "auto"

    @classmethod
    def from_settings(cls, settings: CommonSettings | None) -> S3Endpoint:
        if settings is None:
            return cls()
        secret = settings.s3_secret_access_key
        return cls(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            addressing_style=settings.s3_addressing_style,
        )

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": self.addressing_style},
            retries={"mode": "standard", "max_attempts": 5},
            # Compatible services reject the CRC trailers boto3 now adds by default; every PUT
            # of ours carries a Content-MD5 the server checks instead.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session of its own: boto3's default session is not thread-safe, its clients are.
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=config,
        )


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    return parsed.netloc, parsed.path.strip("/")


class S3Objects:
    """One bucket prefix through one lazily made client, with boto3's errors mapped to
    :class:`StorageError` / :class:`BlobNotFound`. Shared by the blob store and model fetching."""

    def __init__(self, bucket: str, prefix: str, endpoint: S3Endpoint):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self) -> Any:
        # Made on first use and again after a fork: a connection pool must not be shared by
        # the processes a prefork server makes after opening the store.
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self.endpoint.client()
                self._pid = os.getpid()
            return self._client

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def call(self, what: str, fn: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _MISSING:
                raise BlobNotFound(f"{what}: not found in {self.url}") from exc
            raise StorageError(f"{what} in {self.url}: {code} {error.get('Message', '')}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"{what} in {self.url}: {exc}") from exc

    def head(self, relative: str) -> dict[str, Any] | None:
        key = self.key(relative)
        try:
            head: dict[str, Any] = self.call(
                f"HEAD {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key)
            )
            return head
        except BlobNotFound:
            return None

    def get(self, relative: str) -> BinaryIO:
        """The object as a read-only stream; :class:`BlobNotFound` if there is none."""
        key = self.key(relative)
        response = self.call(
            f"GET {key}", lambda: self.client.get_object(Bucket=self.bucket, Key=key)
        )
        return cast(BinaryIO, io.BufferedReader(_Body(response["Body"], self, key), CHUNK))

    def put(self, relative: str, body: IO[bytes], *, size: int, md5: bytes) -> None:
        key = self.key(relative)
        content_md5 = base64.b64encode(md5).decode()
        self.call(
            f"PUT {key}",
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentLength=size, ContentMD5=content_md5
            ),
        )

    def put_bytes(self, relative: str, data: bytes) -> None:
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        self.put(relative, io.BytesIO(data), size=len(data), md5=md5)

    def put_file(self, relative: str, path: Path) -> None:
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as f:
            while block := f.read(CHUNK):
                md5.update(block)
            f.seek(0)
            self.put(relative, f, size=path.stat().st_size, md5=md5.digest())

    def copy(self, source: str, dest: str) -> bool:
        """Server-side copy; False if ``source`` is not there."""
        src, dst = self.key(source), self.key(dest)
        try:
            self.call(
                f"COPY {src} to {dst}",
                lambda: self.client.copy_object(
                    Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src}
                ),
            )
        except BlobNotFound:
            return False
        return True

    def delete(self, relative: str) -> None:
        key = self.key(relative)
        self.call(f"DELETE {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def list(self, relative_prefix: str) -> Iterator[dict[str, Any]]:
        """Objects under ``relative_prefix``, with ``Key`` made relative to the store's prefix."""
        paginator = self.client.get_paginator("list_objects_v2")
        base = self.key("")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.key(relative_prefix))
        it = iter(pages)
        while True:
            page = self.call(f"LIST {self.key(relative_prefix)}", lambda: next(it, None))
            if page is None:
                return
            for obj in page.get("Contents", []):
                yield {**obj, "Key": obj["Key"][len(base) :]}

    def check(self) -> None:
        try:
            self.call("HEAD bucket", lambda: self.client.head_bucket(Bucket=self.bucket))
        except BlobNotFound as exc:  # a HEAD's 404 has no body to name the bucket
            where = self.endpoint.endpoint_url or "AWS"
            raise StorageError(f"no bucket {self.bucket!r} at {where}") from exc


class _Body(io.RawIOBase):
    """A GET's body as a raw stream; errors mid-read become :class:`StorageError`."""

    def __init__(self, body: Any, objects: S3Objects, key: str):
        self._body = body
        self._objects = objects
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._objects.call(f"GET {self._key}", lambda: self._body.read(len(buffer)))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()


class S3Storage(StreamPuts):
    def __init__(self, objects: S3Objects):
        self.objects = objects

    @property
    def url(self) -> str:
        return self.objects.url

    def local_path(self, key: str) -> Path | None:
        return None

    def put_stream(
        self, chunks: Iterable[bytes], *, max_bytes: int | None = None, durable: bool = True
    ) -> StoredBlob:
        """Store under the content's sha256 with one PUT (durable once it returns: ``durable``
        changes nothing here). Bytes already stored are not sent again."""
        h = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as buf:
            for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise PayloadTooLarge(max_bytes)
                h.update(chunk)
                md5.update(chunk)
                buf.write(chunk)
            key = h.hexdigest()
            if not self.exists(key):
                buf.seek(0)
                self.objects.put(
                    blob_relpath(key), cast(IO[bytes], buf), size=size, md5=md5.digest()
                )
        return StoredBlob(key=key, sha256=key, size=size)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.objects.get(blob_relpath(key))
        except BlobNotFound as exc:
            raise BlobNotFound(f"no blob {key} in {self.url}") from exc

    def exists(self, key: str) -> bool:
        return self.objects.head(blob_relpath(key)) is not None

    def delete(self, key: str) -> None:
        # S3's DELETE of a missing key succeeds, as unlink(missing_ok=True) does.
        self.objects.delete(blob_relpath(key))

    def set_aside(self, key: str) -> str | None:
        token = f"tmp/{key}.{uuid.uuid4().hex}.aside"
        if not self.objects.copy(blob_relpath(key), token):
            return None
        self.objects.delete(blob_relpath(key))
        return token

    def put_back(self, key: str, token: str) -> None:
        # Not there any more: recover_set_aside put it back. A writer's copy of the same bytes
        # meanwhile is replaced by identical ones.
        if self.objects.copy(_checked_token(token), blob_relpath(key)):
            self.objects.delete(token)

    def discard(self, token: str) -> None:
        self.objects.delete(_checked_token(token))

    def recover_set_aside(self, older_than_s: float) -> int:
        # LastModified is the copy's time on the server: the age of the set-aside.
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        restored = 0
        for obj in list(self.objects.list("tmp/")):
            name = obj["Key"].removeprefix("tmp/")
            if not name.endswith(".aside") or obj["LastModified"] >= cutoff:
                continue
            if self.objects.copy(obj["Key"], blob_relpath(name.split(".", 1)[0])):
                self.objects.delete(obj["Key"])
                restored += 1
        return restored

    def check(self) -> None:
        self.objects.check()


def _checked_token(token: str) -> str:
    # A token names an object of the store's tmp/ only: never anything else in the bucket.
    if not token.startswith("tmp/") or not token.endswith(".aside") or "/" in token[4:]:
        raise ValueError(f"not a set-aside token: {token!r}")
    return token


def open_s3_storage(url: str, settings: CommonSettings | None = None) -> S3Storage:
    bucket, prefix = parse_s3_url(url)
    return S3Storage(S3Objects(bucket, prefix, S3Endpoint.from_settings(settings)))
