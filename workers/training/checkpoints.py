"""What every training loop shares: hooks, cancellation, atomic checkpoints (torch)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]


class TrainingCancelled(Exception):
    """``should_stop`` returned True; a checkpoint was written and the run can be resumed."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"training cancelled at step {step}; checkpoint at {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a worker killed mid-write must leave the previous checkpoint usable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state: dict[str, Any] | None = torch.load(path, map_location="cpu", weights_only=True)
    return state
