"""The model registry: which version of each model is active, and one loaded copy per process.

The active version of model ``name`` is the content of ``<models_dir>/<name>/ACTIVE`` (written
atomically), or the newest published version when that file is absent (``shared.model_versions``,
re-exported here). ``get`` re-reads the pointer at most every ``check_interval`` seconds, so
activating a new version reaches every worker without a restart (Gorse's workers pull the newest
model the same way).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from shared.inference.base import InferenceModel
from shared.inference.manifest import Manifest, list_versions
from shared.inference.slots import InferenceSlots

# The version pointer and naming are pure Python (the gateway uses them without onnxruntime), so
# they live in shared.model_versions and every caller imports them from there.
from shared.model_versions import ModelError, active_version, older_versions
from shared.storage.base import StorageError

if TYPE_CHECKING:
    from shared.remote_models import RemoteModels

M = TypeVar("M", bound=InferenceModel)
log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(
        self,
        models_dir: Path,
        *,
        threads: int | None = None,
        check_interval: float = 2.0,
        slots: InferenceSlots | None = None,
        remote: RemoteModels | None = None,
    ):
        self.models_dir = models_dir
        # Set: versions are published to object storage and fetched into models_dir once.
        self.remote = remote
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
            wanted = version or self._active_version(name)
            self._checked[name] = now
            if wanted is None:
                raise ModelError(f"model {name!r} is not built (run `make models`)")
            if cached is not None and cached[0] == wanted:
                return cached[1]  # type: ignore[return-value]
            try:
                model = self._load(name, wanted, cls)
            except ModelError as exc:
                # A corrupt copy must not stay cached; the next call tries again from disk.
                self._cache.pop(name, None)
                if version is not None:
                    raise  # that version was asked for: no other will do
                model = self._fall_back(name, wanted, cls, exc)
            # A fallback is cached as what `wanted` serves, so it is not retried on every call;
            # activating another version (or a restart) tries again.
            self._cache[name if version is None else f"{name}@{version}"] = (wanted, model)
            return model

    def _load(self, name: str, version: str, cls: type[M]) -> M:
        model_dir = self.models_dir / name / version
        if self.remote is not None:
            model_dir = self.remote.fetch(self.models_dir, name, version)
        return cls(model_dir, threads=self.threads, slots=self.slots)

    def _fall_back(self, name: str, broken: str, cls: type[M], error: ModelError) -> M:
        """The newest older version that loads, when the active one does not (a corrupt file)."""
        reasons = [str(error)]
        for older in older_versions(self.models_dir, name, broken):
            try:
                model = self._load(name, older, cls)
            except ModelError as exc:
                reasons.append(str(exc))
                continue
            log.error("%s; serving %s %s instead until a good version is active", error, name,
                      older)  # fmt: skip
            return model
        raise ModelError("; ".join(reasons) + f"; no older version of {name} loads") from error

    def _active_version(self, name: str) -> str | None:
        if self.remote is None:
            return active_version(self.models_dir, name)
        try:
            # A version this host trained and did not publish is still served from its disk.
            return self.remote.active_version(name) or active_version(self.models_dir, name)
        except StorageError as exc:
            # The store is out of reach: keep serving what this host already has.
            log.warning("models at %s unreachable, using local versions: %s", self.remote.url, exc)
            return active_version(self.models_dir, name)

    def get_or_none(self, name: str, cls: type[M]) -> M | None:
        try:
            return self.get(name, cls)
        except ModelError:
            return None
