"""`atelier reco evaluate`: the selected model next to tuned peers on one per-user test split."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from bench.synthetic_interactions import counts_no_time
from suite.cli import app


def test_reco_evaluate_prints_product_beside_peers_on_timestampless_counts(
    tmp_path: Path,
) -> None:
    users, items, values, _ = counts_no_time(200, 300, 5000, seed=3)
    path = tmp_path / "plays.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user", "item", "value"])  # no timestamp column: counts carry none
        w.writerows(zip(users, items, values, strict=True))
    plot = tmp_path / "cmp.png"
    result = CliRunner().invoke(
        app,
        ["reco", "evaluate", "--interactions", str(path), "--budget-s", "5", "--plot", str(plot)],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for peer in ("implicit-als(tuned)", "implicit-bpr(defaults)", "ease(tuned)", "rp3beta(tuned)"):
        assert peer in out
    assert "atelier: " in out and "95% CI" in out and "/ best tuned peer" in out
    assert "validation (per-user holdout" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reco_evaluate_refuses_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["reco", "evaluate", "--interactions", str(tmp_path / "x")])
    assert result.exit_code == 1 and "no such file" in result.output
