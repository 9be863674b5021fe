"""The model registry: which version of each model is active, and one loaded copy per process.

The active version of model ``name`` is the content of ``<models_dir>/<name>/ACTIVE`` (written
atomically), or the newest published version when that file is absent (``shared.model_versions``,
re-exported here). ``get`` re-reads the pointer at most every ``check_interval`` seconds, so
activating a new version reaches every worker without a restart (Gorse's workers pull the newest
model the same way).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TypeVar

from shared.inference.base import InferenceModel
from shared.inference.manifest import Manifest, list_versions
from shared.inference.slots import InferenceSlots

# The version pointer and naming are pure Python (the gateway uses them without onnxruntime);
# re-exported here so that serving and training code keeps importing them from the registry.
from shared.model_versions import (  # noqa: F401
    ACTIVE_FILE,
    MANIFEST_NAME,
    ModelError,
    active_version,
    next_version,
    resolve_model,
    set_active_version,
    tenant_model_name,
)

M = TypeVar("M", bound=InferenceModel)


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
