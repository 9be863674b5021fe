"""Blob storage behind a small interface, chosen by URL scheme: ``file://`` and ``s3://``.

Blobs are content-addressed by sha256: the same bytes uploaded twice are stored once, and a
key never changes meaning. Writes are atomic (a file store: temp file in the same directory,
fsync, rename; S3: a single PUT, visible whole or not at all).

Sharing makes deletion race with writing: a writer that finds its bytes already stored skips
the write, and until it commits the asset row that points at them, a deleter that just removed
the last other reference sees none and deletes the blob. Neither side locks; instead the
deleter sets the blob aside (a rename; on S3 a copy to ``tmp/`` then a delete, so the blob
leaves its key at one instant), checks the references again on a fresh connection, and only
then discards it or puts it back; a writer, once its rows are committed, checks that its blobs
exist and writes any that went missing again (:func:`ensure_stored`). Either the deleter's
second check sees the writer's row, or the writer's check runs after the blob was set aside and
sees it gone.

``shared.storage.s3`` (boto3) is imported only when an ``s3://`` URL is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.storage.base import (
    CHUNK,
    BlobNotFound,
    BlobStorage,
    InvalidBlobKey,
    PayloadTooLarge,
    StorageError,
    StorageFull,
    StoredBlob,
    blob_relpath,
    open_storage,
    register_backend,
)
from shared.storage.file import FileSystemStorage, open_file_storage
from shared.storage.sharing import (
    BlobSource,
    delete_unreferenced_blobs,
    ensure_stored,
    put_remembered,
)

if TYPE_CHECKING:
    from shared.config import CommonSettings

__all__ = [
    "CHUNK",
    "BlobNotFound",
    "BlobSource",
    "BlobStorage",
    "FileSystemStorage",
    "InvalidBlobKey",
    "PayloadTooLarge",
    "StorageError",
    "StorageFull",
    "StoredBlob",
    "blob_relpath",
    "delete_unreferenced_blobs",
    "ensure_stored",
    "open_storage",
    "put_remembered",
    "register_backend",
]


def _open_s3(url: str, settings: CommonSettings | None) -> BlobStorage:
    from shared.storage.s3 import open_s3_storage

    return open_s3_storage(url, settings)


register_backend("file", open_file_storage)
register_backend("s3", _open_s3)
