"""Model versions published to object storage (``models_url = s3://bucket/prefix``), fetched once.

The bucket holds the same layout as a models directory: ``<prefix>/<name>/<version>/`` with the
version's files and its ``manifest.json``, and ``<prefix>/<name>/ACTIVE`` naming the active
version (absent: the newest). A host downloads a version into its local models directory the
first time it is wanted: into a temp directory, every file checked against the sha256 the
manifest lists, then renamed into place (``publish_model_dir``); from then on it is served from
local disk as any other. A download that does not match its manifest is refused with a
:class:`ModelError` and leaves nothing behind.

Publishing writes the files first and the manifest last, so a version whose manifest is listed
is whole. Pure Python; boto3 is imported only when the store is first used.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from shared.inference.manifest import (
    MANIFEST_NAME,
    Manifest,
    publish_model_dir,
    read_manifest,
    verify_files,
)
from shared.model_versions import ACTIVE_FILE, ModelError
from shared.storage.base import BlobNotFound, StorageError

if TYPE_CHECKING:
    from shared.config import CommonSettings
    from shared.storage.s3 import S3Objects


class RemoteModels:
    def __init__(self, objects: S3Objects):
        self.objects = objects

    @property
    def url(self) -> str:
        return self.objects.url

    def _read(self, relative: str) -> bytes | None:
        try:
            with self.objects.get(relative) as f:
                return f.read()
        except BlobNotFound:
            return None

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first (versions sort as strings)."""
        found = set()
        for obj in self.objects.list(f"{name}/"):
            parts = obj["Key"].split("/")
            if len(parts) == 3 and parts[2] == MANIFEST_NAME and not parts[1].startswith("."):
                found.add(parts[1])
        return sorted(found)

    def active_version(self, name: str) -> str | None:
        pointer = self._read(f"{name}/{ACTIVE_FILE}")
        version = pointer.decode().strip() if pointer else ""
        listed = f"{name}/{version}/{MANIFEST_NAME}"
        if _plain_name(version) and self.objects.head(listed) is not None:
            return version
        versions = self.versions(name)
        return versions[-1] if versions else None

    def fetch(self, models_dir: Path, name: str, version: str) -> Path:
        """The local directory of ``name``/``version``, downloaded and checked if not there yet."""
        if not _plain_name(version):
            raise ModelError(f"refused model {name}: bad version {version!r}")
        final = models_dir / name / version
        if (final / MANIFEST_NAME).is_file():
            return final
        where = f"{self.url}/{name}/{version}"
        try:
            raw = self._read(f"{name}/{version}/{MANIFEST_NAME}")
            if raw is None:
                raise ModelError(f"model {name} has no version {version} in {self.url}")
            try:
                manifest = Manifest.model_validate_json(raw)
            except ValueError as exc:
                raise ModelError(f"refused model {where}: unreadable manifest: {exc}") from exc
            for fname in manifest.files:
                if not _plain_name(fname) or fname == MANIFEST_NAME:
                    raise ModelError(f"refused model {where}: bad file name {fname!r}")
            with publish_model_dir(models_dir, name, version) as tmp:
                for fname in manifest.files:
                    src = self.objects.get(f"{name}/{version}/{fname}")
                    with src, (tmp / fname).open("wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                try:
                    verify_files(tmp, manifest)
                except ValueError as exc:
                    raise ModelError(f"refused model download from {where}: {exc}") from exc
                (tmp / MANIFEST_NAME).write_bytes(raw)
        except (StorageError, FileNotFoundError) as exc:
            raise ModelError(f"cannot fetch model {where}: {exc}") from exc
        except OSError:
            # Another process of this host renamed its copy into place first.
            if not (final / MANIFEST_NAME).is_file():
                raise
        return final

    def push(self, models_dir: Path, name: str, version: str, *, activate: bool = False) -> None:
        """Publish a local version: files first, the manifest last (it makes the version seen)."""
        src = models_dir / name / version
        manifest = read_manifest(src)
        verify_files(src, manifest)
        for fname in [*manifest.files, MANIFEST_NAME]:
            self.objects.put_file(f"{name}/{version}/{fname}", src / fname)
        if activate:
            self.set_active(name, version)

    def set_active(self, name: str, version: str) -> None:
        if self.objects.head(f"{name}/{version}/{MANIFEST_NAME}") is None:
            raise ModelError(f"model {name} has no version {version} in {self.url}")
        self.objects.put_bytes(f"{name}/{ACTIVE_FILE}", version.encode())


def _plain_name(name: str) -> bool:
    """A name that stays one directory level below its parent (from the bucket: not trusted)."""
    return bool(name) and not name.startswith(".") and Path(name).name == name


def remote_models(settings: CommonSettings) -> RemoteModels | None:
    """The store of ``settings.models_url``, or None when models are local only."""
    if not settings.models_url:
        return None
    from shared.storage.s3 import S3Endpoint, S3Objects, parse_s3_url

    bucket, prefix = parse_s3_url(settings.models_url)
    return RemoteModels(S3Objects(bucket, prefix, S3Endpoint.from_settings(settings)))
