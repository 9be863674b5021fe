"""Inference slots bound concurrent model runs across processes and threads, and a dead holder
never keeps its slot."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from shared.inference.slots import InferenceSlots, SlotBusy, SlottedSession

ctx = mp.get_context("fork")


def _hold_until_told(directory: str, count: int, held: Any, release: Any) -> None:
    slots = InferenceSlots(count, Path(directory))
    with slots.hold():
        held.set()
        release.wait(30)


def _holder(tmp_path: Path, count: int) -> tuple[Any, Any, Any]:
    held, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_until_told, args=(str(tmp_path), count, held, release))
    proc.start()
    assert held.wait(30), "the child never got a slot"
    return proc, release, held


def test_one_slot_is_exclusive_across_processes(tmp_path: Path) -> None:
    slots = InferenceSlots(1, tmp_path)
    proc, release, _ = _holder(tmp_path, 1)
    try:
        with pytest.raises(SlotBusy), slots.hold(blocking=False):
            pass
    finally:
        release.set()
        proc.join(30)
    with slots.hold(blocking=False) as k:
        assert k == 0


def test_n_slots_admit_n_runs(tmp_path: Path) -> None:
    slots = InferenceSlots(2, tmp_path)
    proc, release, _ = _holder(tmp_path, 2)
    try:
        with slots.hold(blocking=False) as mine:
            other = InferenceSlots(2, tmp_path)
            with pytest.raises(SlotBusy), other.hold(blocking=False):
                pass
        assert mine in (0, 1)
    finally:
        release.set()
        proc.join(30)


def test_a_killed_holder_frees_its_slot(tmp_path: Path) -> None:
    proc, _, _ = _holder(tmp_path, 1)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    with InferenceSlots(1, tmp_path).hold(blocking=False) as k:
        assert k == 0


def test_threads_of_one_process_share_the_bound(tmp_path: Path) -> None:
    slots = InferenceSlots(1, tmp_path)
    outcome: list[str] = []

    def other_thread() -> None:
        try:
            with slots.hold(blocking=False):
                outcome.append("got it")
        except SlotBusy:
            outcome.append("busy")

    with slots.hold():
        t = threading.Thread(target=other_thread)
        t.start()
        t.join(30)
    assert outcome == ["busy"]
    t = threading.Thread(target=other_thread)
    t.start()
    t.join(30)
    assert outcome == ["busy", "got it"]


def test_a_waiter_gets_the_slot_when_it_frees(tmp_path: Path) -> None:
    proc, release, _ = _holder(tmp_path, 1)
    slots = InferenceSlots(1, tmp_path)
    got = threading.Event()

    def wait_for_it() -> None:
        with slots.hold():
            got.set()

    t = threading.Thread(target=wait_for_it)
    t.start()
    assert not got.wait(0.3)
    release.set()
    proc.join(30)
    assert got.wait(30)
    t.join(30)


def test_a_slotted_session_runs_inside_a_slot(tmp_path: Path) -> None:
    slots = InferenceSlots(1, tmp_path)

    class FakeSession:
        inputs = ["pixels"]

        def run(self, outputs: Any, feeds: Any) -> str:
            # Another thread cannot take the only slot while this run is in progress.
            seen: list[str] = []

            def probe() -> None:
                try:
                    with slots.hold(blocking=False):
                        seen.append("free")
                except SlotBusy:
                    seen.append("held")

            t = threading.Thread(target=probe)
            t.start()
            t.join(30)
            return seen[0]

    session = SlottedSession(FakeSession(), slots)  # type: ignore[arg-type]
    assert session.run(None, {}) == "held"
    assert session.inputs == ["pixels"]
    with slots.hold(blocking=False):
        pass


def test_slot_count_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        InferenceSlots(0, tmp_path)


@pytest.mark.models
def test_registry_models_wait_for_a_slot(models_dir: Path, tmp_path: Path) -> None:
    """The image tagger loaded through a registry with slots does not run while another
    process holds the only slot, and runs as soon as it is released."""
    import numpy as np
    from PIL import Image

    from shared.inference.registry import ModelRegistry
    from workers.tagging.image import ImageTagger

    registry = ModelRegistry(models_dir, threads=1, slots=InferenceSlots(1, tmp_path))
    tagger = registry.get("image_tagger", ImageTagger)
    image = Image.fromarray(np.full((256, 256, 3), 128, dtype=np.uint8))
    proc, release, _ = _holder(tmp_path, 1)
    done = threading.Event()
    results: list[Any] = []

    def tag() -> None:
        results.extend(tagger.predict([image]))
        done.set()

    t = threading.Thread(target=tag)
    t.start()
    try:
        assert not done.wait(1.0), "the model ran while another process held the only slot"
    finally:
        release.set()
        proc.join(30)
    assert done.wait(60)
    t.join(30)
    assert results[0].embedding.shape == (1280,)
