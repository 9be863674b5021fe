"""The one place that creates onnxruntime sessions (providers, threads, spinning)."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort


def default_intra_op_threads() -> int:
    """Threads per session so that worker processes x threads stays within the cores.

    ``ATELIER_ORT_THREADS`` wins; otherwise one thread, because on small shared machines one
    intra-op thread per process and more processes beats many threads (see docs/perf.md).
    """
    env = os.environ.get("ATELIER_ORT_THREADS")
    return max(1, int(env)) if env else 1


def create_session(path: Path | str, *, threads: int | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_intra_op_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads steal the core from sibling worker processes on a busy machine.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
