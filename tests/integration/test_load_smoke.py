"""bench/bench_load.py, short: 20 s of the mixed load at a low rate against the suite started as
`make run` does (SQLite, private Redis), then the accounting. Nothing accepted may be lost and
nothing may answer 5xx; latency is reported, never asserted (the machine is shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_load import LoadConfig, run_load
from bench.load.accounting import account, read_ledger

pytestmark = pytest.mark.integration


def test_mixed_load_loses_nothing(tmp_path: Path, models_dir: Path) -> None:
    # No recommender training: the point is the accounting path; the full run trains.
    cfg = LoadConfig(duration_s=20, rate=3, catalogue=60, train=False, drain_timeout_s=120)
    report = run_load(cfg, tmp_path)
    text = report.render()
    print(text)
    acc = report.accounting
    assert acc.items_accepted > 0 and acc.events_accepted > 0, text
    assert report.server_errors == 0, text
    assert acc.lost == 0, (acc.items_missing[:5], acc.events_missing[:5], text)
    assert report.jobs_left == 0 and acc.unprocessed == 0, (acc.images_untagged, acc.not_ready)
    assert report.ok, text
    # The accounting does see a loss: an item and an event accepted that the database never got.
    _, accepted = read_ledger(report.ledger)
    accepted.items["no-such-item"] = "image"
    accepted.add_events(["no-such-event"])
    missed = account(f"sqlite:///{tmp_path / 'atelier.db'}", report.tenant_id, accepted)
    assert (missed.items_missing, missed.events_missing) == (["no-such-item"], ["no-such-event"])
