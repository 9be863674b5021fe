"""Model manifests and atomic publication of model directories.

A model lives in ``<models_dir>/<name>/<version>/`` with a ``manifest.json`` beside its files.
Builders write into a temporary sibling directory and rename it into place, so a reader never
sees a half-written model (the paperless classifier pattern, applied to a whole directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class Manifest(BaseModel):
    """What a serving process needs to know about a model, and where it came from."""

    format_version: int = FORMAT_VERSION
    name: str
    version: str
    kind: str  # image_tagger | text_embedder | text_generator | image_generator | tenant_tagger
    files: dict[str, str] = Field(default_factory=dict)  # file name -> sha256
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    license: str = ""
    attribution: str = ""
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def tags(self) -> list[str]:
        """The tags a generator trained with tags takes (``preprocessing.tags``; else none)."""
        return [str(t) for t in self.preprocessing.get("tags") or []]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(model_dir: Path) -> Manifest:
    return Manifest.model_validate_json((model_dir / MANIFEST_NAME).read_text())


def verify_files(model_dir: Path, manifest: Manifest) -> None:
    """Raise ``ValueError`` naming the first file whose hash does not match the manifest."""
    for fname, digest in manifest.files.items():
        path = model_dir / fname
        if not path.is_file():
            raise ValueError(f"{manifest.name}/{manifest.version}: missing file {fname}")
        actual = sha256_file(path)
        if actual != digest:
            raise ValueError(
                f"{manifest.name}/{manifest.version}: {fname} is corrupt "
                f"(sha256 {actual[:12]}..., manifest says {digest[:12]}...)"
            )


@contextmanager
def publish_model_dir(
    models_dir: Path, name: str, version: str, *, overwrite: bool = False
) -> Iterator[Path]:
    """Yield a temp directory to write a model into; on success rename it to its final place.

    The caller writes its files and then calls :func:`write_manifest` inside the block. On an
    exception the temp directory is removed and nothing is published.
    """
    final = models_dir / name / version
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".part", dir=final.parent))
    try:
        yield tmp
        if not (tmp / MANIFEST_NAME).is_file():
            raise RuntimeError(f"builder for {name}/{version} wrote no manifest")
        _fsync_dir_files(tmp)
        # mkdtemp makes the directory private; services may run as another user than the builder.
        tmp.chmod(0o755)
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"model {name}/{version} already exists")
            trash = final.with_name(f".{version}.old.{os.getpid()}")
            final.rename(trash)
            tmp.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest(model_dir: Path, manifest: Manifest) -> Manifest:
    """Hash every file in ``model_dir`` (except the manifest) and write the manifest."""
    files = {
        p.name: sha256_file(p)
        for p in sorted(model_dir.iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    }
    manifest = manifest.model_copy(update={"files": files})
    (model_dir / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(), indent=2))
    return manifest


def _fsync_dir_files(path: Path) -> None:
    for p in path.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def list_versions(models_dir: Path, name: str) -> list[Manifest]:
    """Published versions of one model, oldest first (versions sort as strings)."""
    base = models_dir / name
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_NAME).is_file():
            out.append(read_manifest(d))
    return out
