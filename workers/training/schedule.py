"""When a time-budgeted training run ends, and its learning rate on the way there."""

from __future__ import annotations

import math
from dataclasses import dataclass


def check_limits(cap_name: str, cap: int | None, budget_s: float | None) -> None:
    """ValueError unless a run has a cap (``epochs``, ``steps``) of at least 1, a positive
    budget in seconds, or both."""
    if cap is None and budget_s is None:
        raise ValueError(f"give {cap_name}, budget_s or both")
    if cap is not None and cap < 1:
        raise ValueError(f"{cap_name} must be >= 1")
    if budget_s is not None and budget_s <= 0:
        raise ValueError("budget_s must be positive")


@dataclass(frozen=True)
class Schedule:
    """When training ends: after ``total_steps`` (a cap), after ``budget_s`` seconds of
    training, or whichever comes first. The learning rate follows whichever is nearer its end,
    so a run cut by its budget still finishes its decay."""

    total_steps: int | None
    budget_s: float | None
    warmup_steps: int = 100

    def fraction(self, step: int, elapsed: float) -> float:
        by_steps = step / self.total_steps if self.total_steps else 0.0
        by_time = elapsed / self.budget_s if self.budget_s else 0.0
        return min(1.0, max(by_steps, by_time))

    def done(self, step: int, elapsed: float) -> bool:
        return self.fraction(step, elapsed) >= 1.0

    def lr(self, step: int, elapsed: float, base_lr: float) -> float:
        # Short warm-up then cosine to 10%: a constant rate trains worse (see docs/perf.md).
        warm = self.warmup_steps
        if self.total_steps:
            warm = min(warm, max(1, self.total_steps // 20))
        if step < warm:
            return base_lr * (step + 1) / warm
        t = self.fraction(step, elapsed)
        return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
