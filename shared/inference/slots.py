"""Inference slots: at most N model runs at once on this host, across every worker process.

A worker job is part model run, part everything else (reading pixels, database round trips,
writing tags). With one worker process per core, a core sits idle in the model's sense while its
process does the everything-else; with more processes than cores, their model runs oversubscribe
the CPU (and each other's caches). Slots separate the two: start more worker processes than
there are cores, and let each model run take a slot, so that the number of concurrent model
runs (each on ``ATELIER_ORT_THREADS`` threads) stays within the cores while one process's
database and file work overlaps another's inference. ``bench/bench_tagging_e2e.py`` measures it.

A slot is an exclusive ``flock`` on one of N files in a directory that every worker process of
the host (every queue's) shares. The kernel releases a lock when its holder dies, so a worker
killed mid-run (a hard time limit, the OOM killer) cannot leak a slot, which a semaphore
shared across fork would. Locks are taken on descriptors each process opens for itself (a
descriptor inherited across fork would share one lock between parent and child), and a thread
lock per slot keeps two threads of one process from both "holding" the same file lock.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnxruntime as ort


class SlotBusy(RuntimeError):
    """Every slot is taken (only from a non-blocking :meth:`InferenceSlots.hold`)."""


def default_slots_dir() -> Path:
    # Per user: the lock files of another user's installation would not be writable.
    return Path(tempfile.gettempdir()) / f"atelier-inference-slots-{os.getuid()}"


def default_slot_count(threads: int) -> int:
    """As many concurrent model runs as the cores hold at ``threads`` threads each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, threads))


class InferenceSlots:
    def __init__(self, count: int, directory: Path | None = None) -> None:
        if count < 1:
            raise ValueError("an inference slot count must be at least 1")
        self.count = count
        self.directory = directory or default_slots_dir()
        self._pid: int | None = None
        # Opened (with their thread locks) by the first hold in each process.
        self._fds: list[int] = []
        self._locks: list[threading.Lock] = []
        self._open_lock = threading.Lock()

    def _descriptors(self) -> list[int]:
        pid = os.getpid()
        if self._pid != pid:
            with self._open_lock:
                if self._pid != pid:
                    # After a fork: the parent's descriptors (and its locks) are not ours.
                    self._locks = [threading.Lock() for _ in range(self.count)]
                    self.directory.mkdir(parents=True, exist_ok=True)
                    self._fds = [
                        os.open(self.directory / f"slot-{k}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                        for k in range(self.count)
                    ]
                    self._pid = pid
        return self._fds

    def _try(self, k: int) -> bool:
        if not self._locks[k].acquire(blocking=False):
            return False
        try:
            fcntl.flock(self._fds[k], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._locks[k].release()
            return False
        except BaseException:
            self._locks[k].release()
            raise
        return True

    @contextmanager
    def hold(self, *, blocking: bool = True) -> Iterator[int]:
        """Hold a free slot for the duration (its index); wait for one unless ``blocking`` is
        False, which raises :class:`SlotBusy` instead."""
        fds = self._descriptors()
        first = os.getpid() % self.count
        order = [(first + k) % self.count for k in range(self.count)]
        slot = next((k for k in order if self._try(k)), None)
        if slot is None:
            if not blocking:
                raise SlotBusy(f"all {self.count} inference slots are in use")
            # Wait on one slot: processes start from different ones (pid), so with N slots the
            # waiters spread out; a waiter may miss another slot freeing first, never a run.
            slot = first
            self._locks[slot].acquire()
            try:
                fcntl.flock(fds[slot], fcntl.LOCK_EX)
            except BaseException:
                self._locks[slot].release()
                raise
        try:
            yield slot
        finally:
            fcntl.flock(fds[slot], fcntl.LOCK_UN)
            self._locks[slot].release()


class SlottedSession:
    """An onnxruntime session whose every ``run`` holds an inference slot; everything else
    (inputs, outputs, metadata) is the session's own."""

    def __init__(self, session: ort.InferenceSession, slots: InferenceSlots) -> None:
        self._session = session
        self._slots = slots

    def run(self, output_names: Any, input_feed: Any, *args: Any, **kwargs: Any) -> Any:
        with self._slots.hold():
            return self._session.run(output_names, input_feed, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)
