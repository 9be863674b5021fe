"""The rules behind the fault tests (docs/reliability.md), on their own: which model version
serves when the active one is corrupt, and which storage error a failed write becomes."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from shared.inference.manifest import Manifest, publish_model_dir, write_manifest
from shared.model_versions import older_versions, serving_version, set_active_version
from shared.storage import StorageError, StorageFull
from shared.storage.base import storage_error


def _publish(models: Path, version: str) -> Path:
    with publish_model_dir(models, "m", version) as tmp:
        (tmp / "model.onnx").write_bytes(b"weights of " + version.encode())
        write_manifest(tmp, Manifest(name="m", version=version, kind="image_tagger"))
    return models / "m" / version / "model.onnx"


def test_a_corrupt_active_version_falls_back_to_the_newest_older_whole_one(
    tmp_path: Path,
) -> None:
    for v in ("0001", "0002", "0003"):
        _publish(tmp_path, v)
    set_active_version(tmp_path, "m", "0003")
    assert older_versions(tmp_path, "m", "0003") == ["0002", "0001"]
    assert serving_version(tmp_path, "m") == ("0003", [])

    (tmp_path / "m" / "0003" / "model.onnx").write_bytes(b"cut")
    (tmp_path / "m" / "0002" / "model.onnx").unlink()
    version, problems = serving_version(tmp_path, "m")
    assert version == "0001"
    assert "m/0003: model.onnx is corrupt" in problems[0]
    assert "0002" in problems[1] and "model.onnx" in problems[1]

    (tmp_path / "m" / "0001" / "model.onnx").write_bytes(b"also cut")
    assert serving_version(tmp_path, "m")[0] is None
    # An older version is never a fallback for a newer one's own older versions.
    assert older_versions(tmp_path, "m", "0001") == []


def test_a_repaired_file_is_checked_again(tmp_path: Path) -> None:
    model = _publish(tmp_path, "0001")
    good = model.read_bytes()
    model.write_bytes(good[:-1])
    assert serving_version(tmp_path, "m")[0] is None
    model.write_bytes(good)
    assert serving_version(tmp_path, "m") == ("0001", [])


@pytest.mark.parametrize(
    ("code", "kind"),
    [(errno.ENOSPC, StorageFull), (errno.EDQUOT, StorageFull), (errno.EROFS, StorageError),
     (errno.EIO, StorageError)],
)  # fmt: skip
def test_a_failed_write_becomes_the_stores_error(code: int, kind: type[StorageError]) -> None:
    err = storage_error(OSError(code, "boom"), "cannot write under /blobs")
    assert type(err) is kind and err.errno == code
    assert "cannot write under /blobs: boom" in str(err)
    assert storage_error(err, "again") is err
