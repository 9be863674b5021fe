"""The model registry: which version of each model is active, and one loaded copy per process.

The active version of model ``name`` is the content of ``<models_dir>/<name>/ACTIVE`` (written
atomically), or the newest published version when that file is absent. ``get`` re-reads the
pointer at most every ``check_interval`` seconds, so activating a new version reaches every
worker without a restart (Gorse's workers pull the newest model the same way).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TypeVar

from shared.inference.base import InferenceModel, ModelError
from shared.inference.manifest import MANIFEST_NAME, Manifest, list_versions
from shared.inference.slots import InferenceSlots

ACTIVE_FILE = "ACTIVE"
M = TypeVar("M", bound=InferenceModel)


def active_version(models_dir: Path, name: str) -> str | None:
    pointer = models_dir / name / ACTIVE_FILE
    try:
        version = pointer.read_text().strip()
    except FileNotFoundError:
        version = ""
    if version and (models_dir / name / version / MANIFEST_NAME).is_file():
        return version
    versions = list_versions(models_dir, name)
    return versions[-1].version if versions else None


def set_active_version(models_dir: Path, name: str, version: str) -> None:
    if not (models_dir / name / version / MANIFEST_NAME).is_file():
        raise ModelError(f"model {name} has no version {version}")
    pointer = models_dir / name / ACTIVE_FILE
    tmp = pointer.with_name(f".{ACTIVE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(version)
    os.replace(tmp, pointer)


class ModelRegistry:
    def __init__(
        self,
        models_dir: Path,
        *,
        threads: int | None = None,
        check_interval: float = 2.0,
        slots: InferenceSlots | None = None,
    ):
        self.models_dir = models_dir
        self.threads = threads
        self.slots = slots
        self.check_interval = check_interval
        self._cache: dict[str, tuple[str, InferenceModel]] = {}
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()

    def versions(self, name: str) -> list[Manifest]:
        return list_versions(self.models_dir, name)

    def get(self, name: str, cls: type[M], *, version: str | None = None) -> M:
        """The model ``name`` (active version unless ``version`` is given), loaded once."""
        with self._lock:
            now = time.monotonic()
            cached = self._cache.get(name if version is None else f"{name}@{version}")
            if (
                version is None
                and cached is not None
                and now - self._checked.get(name, 0.0) < self.check_interval
            ):
                return cached[1]  # type: ignore[return-value]
            wanted = version or active_version(self.models_dir, name)
            self._checked[name] = now
            if wanted is None:
                raise ModelError(f"model {name!r} is not built (run `make models`)")
            if cached is not None and cached[0] == wanted:
                return cached[1]  # type: ignore[return-value]
            try:
                model = cls(self.models_dir / name / wanted, threads=self.threads, slots=self.slots)
            except ModelError:
                # A corrupt copy must not stay cached; the next call tries again from disk.
                self._cache.pop(name, None)
                raise
            self._cache[name if version is None else f"{name}@{version}"] = (wanted, model)
            return model

    def get_or_none(self, name: str, cls: type[M]) -> M | None:
        try:
            return self.get(name, cls)
        except ModelError:
            return None


def tenant_model_name(base: str, tenant_id: str) -> str:
    """Registry name of a tenant's own trained copy of ``base`` (e.g. its text generator)."""
    return f"{base}__{tenant_id}"


def resolve_model(
    models_dir: Path, base: str, tenant_id: str, version: str | None = None
) -> tuple[str, str]:
    """``(name, version)`` to serve: the tenant's own model if it has one, else the bundled one.

    An explicit ``version`` is looked up in the tenant's versions first, then the bundled ones.
    """
    own = tenant_model_name(base, tenant_id)
    for name in (own, base):
        if version is not None:
            if (models_dir / name / version / MANIFEST_NAME).is_file():
                return name, version
            continue
        active = active_version(models_dir, name)
        if active is not None:
            return name, active
    if version is not None:
        raise ModelError(f"{base} has no version {version!r} for this tenant")
    raise ModelError(f"model {base!r} is not built (run `make models`)")


def next_version(models_dir: Path, name: str) -> str:
    """Zero-padded increasing versions, so that string order is age order."""
    existing = [int(m.version) for m in list_versions(models_dir, name) if m.version.isdigit()]
    return f"{(max(existing) + 1) if existing else 1:04d}"
