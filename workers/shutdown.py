"""Graceful shutdown: a SIGTERM lets short tasks finish and makes training stop at a checkpoint.

SIGTERM goes to the worker's main process only (Kubernetes, Docker and ``atelier run`` alike),
which starts Celery's warm shutdown: no new tasks, running ones finish. A training job can run
for an hour, past any grace period, so the main process also sends :data:`STOP_SIGNAL` to its
pool processes; there it only sets a flag. Training loops poll the flag through
:func:`workers.jobs.cancel_poller`, write a checkpoint and stop; ``workers.jobs.execute`` then
puts the job back in the queue, and the next worker resumes it from the checkpoint. Other tasks
never look at the flag and finish as before.

SIGUSR2 rather than SIGTERM to the children: billiard's cold shutdown terminates them with
SIGTERM, which must keep killing them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNAL = signal.SIGUSR2

_requested = False
# The prefork pool of this worker's main process (set once the worker is ready).
_pool: list[Any] = []


def requested() -> bool:
    """Whether this process was asked to stop its task at the next checkpoint."""
    return _requested


def _on_stop_signal(_signum: int, _frame: object) -> None:
    global _requested
    _requested = True


def install_child_handler() -> None:
    """In a pool process: :data:`STOP_SIGNAL` sets the flag (its default would kill)."""
    global _requested
    _requested = False
    signal.signal(STOP_SIGNAL, _on_stop_signal)


def remember_pool(pool: Any) -> None:
    _pool[:] = [pool]


def forward_to_children() -> None:
    """In the main process, as its warm shutdown begins."""
    if not _pool:
        return
    try:
        pids = list(_pool[0].info.get("processes", []))
    except Exception as exc:  # a solo or threads pool has no child processes
        log.debug("no pool processes to signal: %s", exc)
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STOP_SIGNAL)
    log.info("asked %d pool process(es) to stop training at a checkpoint", len(pids))
