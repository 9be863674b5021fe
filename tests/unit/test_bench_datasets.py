"""bench.datasets (sha256-verified public data sets) and the extra synthetic shapes.

None of this needs the real files: specs are pointed at tiny files in the real formats.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench import datasets
from bench.datasets import DATASETS, DatasetError, DatasetSpec, load, path_for
from bench.synthetic_interactions import bursty, counts_no_time

ML100K = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
LATEST_SMALL = (
    b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n"
    b"610,170875,3.0,1493846415\n7,31,0.5,1106635946\n"
)
IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}
# The HetRec file has a header and CRLF line endings.
LASTFM = b"userID\tartistID\tweight\r\n2\t51\t13883\r\n2\t52\t11690\r\n2100\t18730\t263\r\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv(datasets.ENV_DATA_DIR, str(d))
    return d


def _fake(
    monkeypatch: pytest.MonkeyPatch, real: str, data: bytes, rows: int, name: str = "tiny"
) -> DatasetSpec:
    """The real data set's format and sources, but the sha256 and size of `data`."""
    spec = replace(DATASETS[real], name=name, sha256=_sha(data), rows=rows)
    monkeypatch.setitem(datasets.DATASETS, name, spec)
    return spec


def _put(spec: DatasetSpec, data: bytes) -> Path:
    path = path_for(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_data_dir_from_env_and_default(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert path_for(DATASETS["ml-100k"]) == data_dir / "ml-100k" / "u.data"
    monkeypatch.delenv(datasets.ENV_DATA_DIR)
    assert datasets.data_dir() == Path(datasets.__file__).resolve().parent / "data"


def test_registry_is_complete() -> None:
    assert set(DATASETS) == {
        "ml-100k",
        "ml-latest-small",
        "lastfm-2k",
        "ag_news",
        "tinyshakespeare",
    }
    for spec in DATASETS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert len(spec.source_commit) == 40
        assert spec.licence
        if spec.name not in ("ag_news", "tinyshakespeare"):
            assert "grouplens" in spec.original.lower()
    assert not DATASETS["lastfm-2k"].has_timestamps


def test_corrupted_file_is_refused_with_a_clear_message(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake(monkeypatch, "ml-100k", ML100K, rows=3)
    path = _put(spec, ML100K)
    assert load("tiny")[0].tolist() == ["196", "186", "22"]

    path.write_bytes(ML100K.replace(b"\t3\t", b"\t4\t", 1))
    with pytest.raises(DatasetError) as err:
        load("tiny")
    msg = str(err.value)
    assert "tiny" in msg and str(path) in msg
    assert spec.sha256 in msg and "expected" in msg
    assert "Raffaello/scala-spark-movie-demo" in msg and "ml-100k.zip" in msg


def test_missing_file_says_where_to_put_and_get_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _fake(monkeypatch, "lastfm-2k", LASTFM, rows=3)
    with pytest.raises(DatasetError) as err:
        load("tiny")
    msg = str(err.value)
    assert "missing" in msg and str(path_for(spec)) in msg
    assert datasets.ENV_DATA_DIR in msg and spec.sha256 in msg
    assert "rafaelpossas/admusic" in msg and "hetrec2011-lastfm-2k.zip" in msg


def test_unknown_name() -> None:
    with pytest.raises(DatasetError, match="unknown data set"):
        load("nope")


def test_parses_movielens_100k_format(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _put(_fake(monkeypatch, "ml-100k", ML100K, rows=3), ML100K)
    users, items, values, timestamps = load("tiny")
    assert users.tolist() == ["196", "186", "22"]
    assert items.tolist() == ["242", "302", "377"]
    assert values.dtype == np.float32 and values.tolist() == [3.0, 3.0, 1.0]
    assert timestamps is not None and timestamps.dtype == np.float64
    assert timestamps.tolist() == [881250949.0, 891717742.0, 878887116.0]


def test_parses_movielens_latest_small_format(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(_fake(monkeypatch, "ml-latest-small", LATEST_SMALL, rows=4), LATEST_SMALL)
    users, items, values, timestamps = load("tiny")
    assert users.tolist() == ["1", "1", "610", "7"]
    assert items.tolist() == ["1", "3", "170875", "31"]
    assert values.tolist() == [4.0, 4.0, 3.0, 0.5]
    assert timestamps is not None and timestamps[2] == 1493846415.0


@pytest.mark.parametrize("data", [LASTFM, LASTFM.rstrip(b"\r\n")], ids=["eol", "no-final-eol"])
def test_parses_lastfm_format(data: bytes, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _put(_fake(monkeypatch, "lastfm-2k", data, rows=3), data)
    users, items, values, timestamps = load("tiny")
    assert timestamps is None
    assert users.tolist() == ["2", "2", "2100"]
    assert items.tolist() == ["51", "52", "18730"]
    assert values.dtype == np.float32 and values.tolist() == [13883.0, 11690.0, 263.0]


def test_row_count_and_field_count_are_checked(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(_fake(monkeypatch, "ml-100k", ML100K, rows=4), ML100K)
    with pytest.raises(DatasetError, match="3 rows, expected 4"):
        load("tiny")
    bad = ML100K.replace(b"\t3\t881250949", b" 3 881250949", 1)
    _put(_fake(monkeypatch, "ml-100k", bad, rows=3), bad)
    with pytest.raises(DatasetError, match="row 1 has 2 fields"):
        load("tiny")


def test_fetch_from_picks_the_verified_copy(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "DATASETS", {})
    spec = _fake(monkeypatch, "ml-latest-small", LATEST_SMALL, rows=4)
    src = tmp_path / "src"
    (src / "edited").mkdir(parents=True)
    (src / "edited" / "ratings.csv").write_bytes(LATEST_SMALL.replace(b"\n", b"\r\n"))
    with zipfile.ZipFile(src / "ml-latest-small.zip", "w") as zf:
        zf.writestr("ml-latest-small/ratings.csv", LATEST_SMALL)

    result = datasets.fetch_from(src)
    assert "ml-latest-small.zip:ml-latest-small/ratings.csv" in result["tiny"]
    assert path_for(spec).read_bytes() == LATEST_SMALL
    assert datasets.status(spec) == "verified"

    path_for(spec).unlink()
    (src / "ml-latest-small.zip").unlink()
    result = datasets.fetch_from(src)
    assert "not found" in result["tiny"] and "another sha256" in result["tiny"]
    assert datasets.status(spec) == "missing"


def _bare_repo_with(tmp_path: Path, relpath: str, data: bytes) -> tuple[Path, str]:
    """A bare git directory whose one commit holds `data` at dir/file (plumbing only)."""
    git_dir = tmp_path / "mirror" / "owner+name" / "repo"
    subprocess.run(["git", "init", "-q", "--bare", str(git_dir)], check=True)

    def git(*args: str, stdin: bytes | None = None) -> str:
        return (
            subprocess.run(
                ["git", f"--git-dir={git_dir}", *args],
                input=stdin,
                capture_output=True,
                check=True,
                env={**os.environ, **IDENTITY},
            )
            .stdout.decode()
            .strip()
        )

    folder, name = relpath.split("/")
    blob = git("hash-object", "-w", "--stdin", stdin=data)
    sub = git("mktree", stdin=f"100644 blob {blob}\t{name}\n".encode())
    root = git("mktree", stdin=f"040000 tree {sub}\t{folder}\n".encode())
    commit = git("commit-tree", root, "-m", "data", stdin=b"")
    git("update-ref", "HEAD", commit)
    return git_dir, commit


def test_fetch_from_git_and_mirrors(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git_dir, commit = _bare_repo_with(tmp_path, "ml-100k/u.data", ML100K)
    monkeypatch.setattr(datasets, "DATASETS", {})
    spec = _fake(monkeypatch, "ml-100k", ML100K, rows=3)

    assert datasets.main(["fetch-from-git", str(git_dir), "ml-100k/u.data", "tiny"]) == 0
    assert path_for(spec).read_bytes() == ML100K

    other = _fake(monkeypatch, "ml-100k", b"another release\n", rows=1, name="other")
    with pytest.raises(DatasetError, match="not installed"):
        datasets.fetch_from_git(git_dir, "ml-100k/u.data", "other")
    assert datasets.status(other) == "missing"
    with pytest.raises(DatasetError, match="git show"):
        datasets.fetch_from_git(git_dir, "ml-100k/u.item", "tiny")

    path_for(spec).unlink()
    mirrored = replace(spec, source_repo="owner/name", source_commit=commit)
    monkeypatch.setitem(datasets.DATASETS, "tiny", mirrored)
    result = datasets.fetch_mirrors(tmp_path / "mirror")
    assert f"{commit}:ml-100k/u.data" in result["tiny"]
    assert datasets.status(mirrored) == "verified"


def test_check_cli_reports_missing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert datasets.main(["check"]) == 1
    out = capsys.readouterr().out
    for spec in DATASETS.values():
        assert spec.name in out and spec.sha256 in out and spec.source_repo in out
    assert "missing" in out and "verified" not in out

    monkeypatch.setattr(datasets, "DATASETS", {})
    _put(_fake(monkeypatch, "ml-100k", ML100K, rows=3), ML100K)
    assert datasets.main(["check"]) == 0
    assert "verified" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_real_file_if_present(name: str) -> None:
    spec = DATASETS[name]
    if not path_for(spec).is_file():
        pytest.skip(f"{name} not in {datasets.data_dir()} (python -m bench.datasets check)")
    if name == "ag_news":  # text classification, not interactions
        texts, labels = datasets.load_ag_news()
        assert len(texts) == spec.rows and np.bincount(labels).tolist() == [1900] * 4
        assert not any("#36;" in t or "\\" in t for t in texts)
        return
    if name == "tinyshakespeare":  # a language-model corpus: the standard 90/10 split
        train, val = datasets.load_tiny_shakespeare()
        assert len(train) + len(val) == 1_115_394 and train.startswith("First Citizen:")
        assert len(val) == 1_115_394 - int(1_115_394 * 0.9)
        return
    users, items, values, timestamps = load(name)
    assert len(users) == len(items) == len(values) == spec.rows
    assert len(np.unique(users)) == spec.n_users and len(np.unique(items)) == spec.n_items
    assert (timestamps is not None) == spec.has_timestamps


def _per_user(users: np.ndarray, column: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(users, kind="stable")
    _, first = np.unique(users[order], return_index=True)
    return np.split(column[order], first[1:])


def test_bursty_shape() -> None:
    users, items, values, timestamps = bursty(300, 200, 6000, seed=3, max_burst_s=1800.0)
    assert len(users) == len(items) == len(values) == 6000
    assert users.dtype.kind == items.dtype.kind == "U" and values.dtype == np.float32
    assert timestamps is not None and timestamps.dtype == np.float64
    assert np.all(np.diff(timestamps) >= 0)
    assert len(np.unique(users)) == 300
    assert timestamps.max() - timestamps.min() <= 365 * 86400
    bursts = _per_user(users, timestamps)
    spans = np.array([b.max() - b.min() for b in bursts])
    assert spans.max() <= 1800.0 + 1e-6
    gaps = np.concatenate([np.diff(np.sort(b)) for b in bursts if len(b) > 1])
    assert 1.0 <= np.median(gaps) <= 120.0  # seconds apart
    starts = np.sort([b.min() for b in bursts])
    assert starts[-1] - starts[0] > 300 * 86400  # sessions spread over the year

    counts = np.sort(np.unique(items, return_counts=True)[1])[::-1]
    assert counts[:10].sum() > 0.15 * len(items)  # Zipf-like head
    again = bursty(300, 200, 6000, seed=3, max_burst_s=1800.0)
    assert np.array_equal(again[1], items) and np.array_equal(again[3], timestamps)


def test_counts_no_time_shape() -> None:
    users, items, values, timestamps = counts_no_time(500, 3000, 20_000, seed=1)
    assert timestamps is None
    assert len(users) == len(items) == len(values) == 20_000
    pairs = np.char.add(np.char.add(users, "|"), items)
    assert len(np.unique(pairs)) == len(pairs)  # aggregated: one row per (user, item)
    assert values.dtype == np.float32 and values.min() >= 1.0
    assert np.array_equal(values, np.round(values))
    assert values.max() >= 10_000 and np.median(values) < 1000  # heavy tail

    _, _, _, same = counts_no_time(500, 3000, 20_000, seed=1, timestamp=1.7e9)
    assert same is not None and same.dtype == np.float64
    assert len(same) == 20_000 and np.all(same == 1.7e9)
    again = counts_no_time(500, 3000, 20_000, seed=1)
    assert np.array_equal(again[0], users) and np.array_equal(again[2], values)


def test_generators_reject_impossible_sizes() -> None:
    with pytest.raises(ValueError):
        bursty(100, 50, 99)
    with pytest.raises(ValueError):
        counts_no_time(10, 10, 60)
