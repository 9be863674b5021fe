"""Per-process worker resources: settings, storage, the model registry, DB sessions.

Created once per worker process (Celery's ``worker_process_init``) and reused by every task;
tests build their own ``WorkerContext`` and call the plain job functions directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.orm import Session

from shared.config import WorkerSettings, worker_settings
from shared.db.session import session_scope
from shared.inference.registry import ModelRegistry
from shared.inference.slots import InferenceSlots, default_slot_count
from shared.remote_models import remote_models
from shared.storage import BlobStorage, open_storage


@dataclass
class WorkerContext:
    settings: WorkerSettings = field(default_factory=worker_settings)

    @cached_property
    def storage(self) -> BlobStorage:
        return open_storage(self.settings.storage_url, self.settings)

    @cached_property
    def registry(self) -> ModelRegistry:
        s = self.settings
        slots = InferenceSlots(
            s.inference_slots or default_slot_count(s.ort_threads), s.inference_slots_dir
        )
        return ModelRegistry(
            s.models_dir, threads=s.ort_threads, slots=slots, remote=remote_models(s)
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.settings.sqlalchemy_url) as s:
            yield s


_context: WorkerContext | None = None


def get_context() -> WorkerContext:
    global _context
    if _context is None:
        _context = WorkerContext()
    return _context


def reset_context() -> None:
    global _context
    _context = None
