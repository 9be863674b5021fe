"""Every served model has the same lifecycle: locate -> load -> preprocess -> run -> postprocess.

Subclasses implement ``_load`` (build sessions and read side files) and ``_predict``; the base
class checks the manifest, and turns any failure into :class:`ModelError` with a clear message so
a corrupt or missing model fails the job, never the worker process (Immich's ``InferenceModel``).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import onnxruntime as ort

from shared.inference.manifest import Manifest, read_manifest, verify_files
from shared.inference.session import create_session
from shared.inference.slots import InferenceSlots, SlottedSession
from shared.metrics import INFERENCE_BATCH_SIZE, INFERENCE_DURATION
from shared.model_versions import ModelError  # defined without onnxruntime, for the gateway


class InferenceModel(ABC):
    kind: ClassVar[str]

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int | None = None,
        verify: bool = True,
        slots: InferenceSlots | None = None,
    ):
        self.model_dir = model_dir
        self.threads = threads
        self.slots = slots
        try:
            self.manifest: Manifest = read_manifest(model_dir)
        except FileNotFoundError as exc:
            raise ModelError(f"no model at {model_dir} (run `make models`)") from exc
        except ValueError as exc:
            raise ModelError(f"unreadable manifest in {model_dir}: {exc}") from exc
        if self.manifest.kind != self.kind:
            raise ModelError(
                f"{model_dir} holds a {self.manifest.kind!r} model, expected {self.kind!r}"
            )
        if verify:
            try:
                verify_files(model_dir, self.manifest)
            except ValueError as exc:
                raise ModelError(str(exc)) from exc
        self._lock = threading.Lock()
        try:
            self._load()
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises several unrelated types on bad files
            raise ModelError(f"cannot load {self.ref}: {exc}") from exc

    @property
    def ref(self) -> str:
        return f"{self.manifest.name}:{self.manifest.version}"

    def session(self, file_name: str = "model.onnx") -> ort.InferenceSession:
        """The ONNX session of ``file_name``; its runs take an inference slot when the model was
        loaded with ``slots`` (shared/inference/slots.py)."""
        session = create_session(self.model_dir / file_name, threads=self.threads)
        if self.slots is None:
            return session
        # Duck-typed: everything the models call on a session, run included, is there.
        return SlottedSession(session, self.slots)

    @abstractmethod
    def _load(self) -> None: ...

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        # Every model's calls pass here, so one place measures them all. Batch size: the first
        # argument's length (a list or array of inputs), or its value when it is a count (the
        # image generator), else 1 (one prompt).
        first: Any = args[0] if args else None
        batch = 1
        if isinstance(first, int):
            batch = first
        elif hasattr(first, "__len__") and not isinstance(first, str):
            batch = len(first)
        started = time.perf_counter()
        try:
            return self._predict(*args, **kwargs)
        finally:
            INFERENCE_DURATION.labels(self.kind).observe(time.perf_counter() - started)
            INFERENCE_BATCH_SIZE.labels(self.kind).observe(batch)

    @abstractmethod
    def _predict(self, *args: Any, **kwargs: Any) -> Any: ...
