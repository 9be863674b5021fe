"""The load's fixed mix, read by the locustfile (task weights) and by bench_load (its report)."""

from __future__ import annotations

# Task weights, out of 20.
MIX = {"upload image": 4, "upload text": 2, "interactions": 5, "recommendations": 4,
       "read item": 3, "list items": 2}  # fmt: skip
EVENTS_PER_BATCH = 20


def describe() -> str:
    total = sum(MIX.values())
    parts = ", ".join(f"{name} {w}" for name, w in MIX.items())
    return f"mix (weights of {total}): {parts}; {EVENTS_PER_BATCH} events per interaction batch"
