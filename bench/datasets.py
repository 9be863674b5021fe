"""Public interaction data sets for the benchmarks, kept out of git and verified by sha256.

The files are not ours to redistribute (see each spec's licence), so they are never committed:
they live in the data directory (env ATELIER_BENCH_DATA, default bench/data/, git-ignored) as
<data dir>/<name>/<file>, and `load` refuses any file whose sha256 is not the published one.

    python -m bench.datasets check                          # what is present / verified / missing
    python -m bench.datasets fetch-from DIR                 # copy verified files (or zip members)
    python -m bench.datasets fetch-from-git GITDIR PATH NAME [--rev REV]
    python -m bench.datasets fetch-mirrors [--root /work/.mirror]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

ENV_DATA_DIR = "ATELIER_BENCH_DATA"
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_MIRROR_ROOT = Path("/work/.mirror")

Loaded = tuple[NDArray[np.str_], NDArray[np.str_], NDArray[np.float32], NDArray[np.float64] | None]

GROUPLENS_MOVIELENS_LICENCE = (
    "GroupLens MovieLens licence: research use, no redistribution without permission, "
    "cite Harper & Konstan 2015 (ACM TiiS 5(4):19); never committed here."
)
AG_NEWS_LICENCE = (
    "AG's News Topic Classification Dataset (Zhang, Zhao & LeCun, NIPS 2015, from A. Gulli's AG "
    "corpus): for non-commercial research use, as its readme says; never committed here."
)
TINY_SHAKESPEARE_LICENCE = (
    "Shakespeare's plays are in the public domain; this concatenation is Andrej Karpathy's "
    "char-rnn data file (MIT-licensed repository). Kept out of git like the others."
)
HETREC_LICENCE = (
    "HetRec 2011 Last.fm 2K (GroupLens, Cantador/Brusilovsky/Kuflik, RecSys 2011): "
    "non-commercial research use under Last.fm's terms; never committed here."
)


@dataclass(frozen=True)
class DatasetSpec:
    """One published interaction file: what it is, how to parse it, where to get it."""

    name: str
    filename: str
    sha256: str
    rows: int
    n_users: int
    n_items: int
    sep: str
    header: bool
    has_timestamps: bool
    values: str
    licence: str
    source_repo: str
    source_path: str
    source_commit: str
    original: str

    def where_to_get(self) -> str:
        owner, repo = self.source_repo.split("/", 1)
        return (
            f"GitHub {self.source_repo} at commit {self.source_commit}, path {self.source_path} "
            f"(python -m bench.datasets fetch-from-git "
            f"{DEFAULT_MIRROR_ROOT}/{owner}+{repo}/repo {self.source_path} {self.name}); "
            f"original: {self.original}"
        )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="ml-100k",
            filename="u.data",
            sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            rows=100_000,
            n_users=943,
            n_items=1682,
            sep="\t",
            header=False,
            has_timestamps=True,
            values="explicit rating 1-5",
            licence=GROUPLENS_MOVIELENS_LICENCE,
            source_repo="Raffaello/scala-spark-movie-demo",
            source_path="ml-100k/u.data",
            source_commit="7af16a4ee23edcd7ce3cd9acc1f8961729bfabc2",
            original=(
                "GroupLens MovieLens 100K, ml-100k.zip (member ml-100k/u.data) from "
                "files.grouplens.org/datasets/movielens/ml-100k.zip"
            ),
        ),
        DatasetSpec(
            name="ml-latest-small",
            filename="ratings.csv",
            sha256="aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
            rows=100_836,
            n_users=610,
            n_items=9724,
            sep=",",
            header=True,
            has_timestamps=True,
            values="explicit rating 0.5-5 in half stars",
            licence=GROUPLENS_MOVIELENS_LICENCE,
            source_repo="stiigp/simple_recommender_system",
            source_path="ml-latest-small/ratings.csv",
            source_commit="0ce41dcad1e07c0ecbc1910d0c6af8718679d929",
            original=(
                "GroupLens MovieLens latest-small (2018-09 release), ml-latest-small.zip "
                "(member ml-latest-small/ratings.csv) from "
                "files.grouplens.org/datasets/movielens/ml-latest-small.zip"
            ),
        ),
        DatasetSpec(
            name="lastfm-2k",
            filename="user_artists.dat",
            sha256="001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b",
            rows=92_834,
            n_users=1892,
            n_items=17_632,
            sep="\t",
            header=True,
            has_timestamps=False,
            values="play count (implicit, heavy-tailed)",
            licence=HETREC_LICENCE,
            source_repo="rafaelpossas/admusic",
            source_path="data/user_artists.dat",
            source_commit="afcc86fc14ec5d96091e6706c019889739896434",
            original=(
                "GroupLens HetRec 2011, hetrec2011-lastfm-2k.zip (member user_artists.dat) from "
                "files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip"
            ),
        ),
        DatasetSpec(
            # Text classification, not interactions: the interaction fields do not apply (0);
            # read it with load_ag_news().
            name="ag_news",
            filename="test.csv",
            sha256="d2a2cef4dfeb21ca17b463fd15e9e5a639c05823d03efabb3d28a75bbfe8d915",
            rows=7_600,
            n_users=0,
            n_items=0,
            sep=",",
            header=False,
            has_timestamps=False,
            values="class 1-4 (World, Sports, Business, Sci/Tech), title, description; 1,900 each",
            licence=AG_NEWS_LICENCE,
            source_repo="suuuch/TransformerClassification",
            source_path="data/ag_news_csv/test.csv",
            source_commit="0d9808e1978c8468b4f8f08a44c5be99d058aa7b",
            original=(
                "ag_news_csv.tar.gz (member ag_news_csv/test.csv) of Xiang Zhang's text "
                "classification data sets (Character-level Convolutional Networks for Text "
                "Classification, NIPS 2015)"
            ),
        ),
        DatasetSpec(
            # A character-level language-model corpus (1.1 MB of plays); the standard split is
            # its first 90% for training and the last 10% for validation. Read it with
            # load_tiny_shakespeare().
            name="tinyshakespeare",
            filename="input.txt",
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            rows=40_000,  # lines
            n_users=0,
            n_items=0,
            sep="",
            header=False,
            has_timestamps=False,
            values="plain text, 1,115,394 characters",
            licence=TINY_SHAKESPEARE_LICENCE,
            source_repo="karpathy/char-rnn",
            source_path="data/tinyshakespeare/input.txt",
            source_commit="6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e",
            original="github.com/karpathy/char-rnn data/tinyshakespeare/input.txt",
        ),
    )
}


class DatasetError(RuntimeError):
    """A data set file is missing, is not the published file, or does not parse."""


def data_dir() -> Path:
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env) if env else DEFAULT_DATA_DIR


class Published(Protocol):
    """What locating, checking and installing a published file needs (the interaction sets
    here, the keyphrase archives in bench/keyphrase_data.py)."""

    @property
    def name(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def sha256(self) -> str: ...


def path_for(spec: Published) -> Path:
    return data_dir() / spec.name / spec.filename


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _spec(name: str | DatasetSpec) -> DatasetSpec:
    if isinstance(name, DatasetSpec):
        return name
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}") from None


def _missing_message(spec: DatasetSpec, path: Path) -> str:
    return (
        f"{spec.name}: {path} is missing.\n"
        f"  Put {spec.filename} (sha256 {spec.sha256}) at {path}\n"
        f"  (data dir: ${ENV_DATA_DIR}, default {DEFAULT_DATA_DIR};"
        f" layout <data dir>/<name>/<file>).\n"
        f"  Get it from: {spec.where_to_get()}.\n"
        f"  Licence: {spec.licence}"
    )


def _mismatch_message(spec: DatasetSpec, path: Path, actual: str) -> str:
    return (
        f"{spec.name}: {path} has sha256 {actual}, expected {spec.sha256}: not the published "
        f"{spec.filename} (corrupted, truncated, line endings changed, or another release).\n"
        f"  Replace it at {path} with the verified file.\n"
        f"  Get it from: {spec.where_to_get()}."
    )


def verify(name: str | DatasetSpec) -> Path:
    """The path of the data set's file once its sha256 checks out; DatasetError otherwise."""
    spec = _spec(name)
    path = path_for(spec)
    if not path.is_file():
        raise DatasetError(_missing_message(spec, path))
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise DatasetError(_mismatch_message(spec, path, actual))
    return path


def parse(spec: DatasetSpec, data: bytes) -> Loaded:
    """Parse the raw bytes of a data set file (already verified) into the 4-tuple."""
    lines = data.decode("utf-8").splitlines()
    if spec.header:
        lines = lines[1:]
    n_cols = 4 if spec.has_timestamps else 3
    rows = [line.split(spec.sep) for line in lines if line.strip()]
    bad = next((i for i, row in enumerate(rows) if len(row) != n_cols), None)
    if bad is not None:
        raise DatasetError(
            f"{spec.name}: row {bad + 1} has {len(rows[bad])} fields, expected {n_cols} "
            f"separated by {spec.sep!r}"
        )
    if len(rows) != spec.rows:
        raise DatasetError(f"{spec.name}: {len(rows)} rows, expected {spec.rows}")
    cols = list(zip(*rows, strict=True)) if rows else [()] * n_cols
    users = np.asarray(cols[0], dtype=np.str_)
    items = np.asarray(cols[1], dtype=np.str_)
    values = np.asarray(cols[2], dtype=np.float32)
    timestamps = np.asarray(cols[3], dtype=np.float64) if spec.has_timestamps else None
    return users, items, values, timestamps


def load(name: str | DatasetSpec) -> Loaded:
    """(users, items, values, timestamps or None) of a verified data set, in file order.

    MovieLens: values are the ratings, timestamps the unix times. Last.fm: values are play
    counts and timestamps None (the data has none).
    """
    path = verify(name)
    return parse(_spec(name), path.read_bytes())


AG_NEWS_CLASSES = ("world", "sports", "business", "sci/tech")


def load_ag_news(name: str = "ag_news") -> tuple[list[str], NDArray[np.int64]]:
    """(texts, labels 0-3 indexing AG_NEWS_CLASSES) of the verified AG News file, in file order.

    A text is the title and the description joined by ". "; the file escapes newlines as a
    backslash followed by "n" and some characters as HTML entities ("#36;" for "$"), which are
    restored here.
    """
    import csv
    import html
    import io

    spec = _spec(name)
    rows = list(csv.reader(io.StringIO(verify(spec).read_text("utf-8"))))
    if len(rows) != spec.rows or any(len(r) != 3 for r in rows):
        raise DatasetError(f"{spec.name}: expected {spec.rows} rows of 3 fields")

    def clean(s: str) -> str:
        s = s.replace("\\n", " ").replace("\\", " ").replace(" #", " &#")
        return " ".join(html.unescape(s).split())

    texts = [f"{clean(title)}. {clean(body)}" for _, title, body in rows]
    labels = np.asarray([int(c) - 1 for c, _, _ in rows], dtype=np.int64)
    return texts, labels


def load_tiny_shakespeare(name: str = "tinyshakespeare") -> tuple[str, str]:
    """(train, validation) text of the verified file: its first 90% and last 10% of characters,
    the split the published character-level results use."""
    text = verify(_spec(name)).read_text("utf-8")
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def status(spec: DatasetSpec) -> str:
    path = path_for(spec)
    if not path.is_file():
        return "missing"
    return "verified" if sha256_file(path) == spec.sha256 else "present, sha256 MISMATCH"


def install(spec: Published, data: bytes, origin: str) -> Path:
    """Write `data` as the data set's file if its sha256 is the published one."""
    actual = sha256_bytes(data)
    if actual != spec.sha256:
        raise DatasetError(
            f"{spec.name}: {origin} has sha256 {actual}, expected {spec.sha256}; not installed"
        )
    path = path_for(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _candidates(root: Path, filename: str) -> Iterator[tuple[str, bytes]]:
    """Files named `filename` under root, and zip members with that base name."""
    for path in sorted(root.rglob(filename)):
        if path.is_file():
            yield str(path), path.read_bytes()
    for archive in sorted(root.rglob("*.zip")):
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.rsplit("/", 1)[-1] == filename:
                        yield f"{archive}:{member}", zf.read(member)
        except (zipfile.BadZipFile, OSError):
            continue


def fetch_from(root: Path, names: list[str] | None = None) -> dict[str, str]:
    """Copy every data set found under root (plain file or zip member) with the right sha256."""
    result: dict[str, str] = {}
    for spec in (_spec(n) for n in names or list(DATASETS)):
        if status(spec) == "verified":
            result[spec.name] = f"already verified at {path_for(spec)}"
            continue
        others: list[str] = []
        for origin, data in _candidates(root, spec.filename):
            if sha256_bytes(data) == spec.sha256:
                result[spec.name] = f"installed {install(spec, data, origin)} from {origin}"
                break
            others.append(origin)
        else:
            result[spec.name] = f"not found under {root}" + (
                f" ({len(others)} {spec.filename} with another sha256: {', '.join(others)})"
                if others
                else ""
            )
    return result


def git_show(git_dir: Path, path: str, rev: str = "HEAD") -> bytes:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{rev}:{path}"],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DatasetError(
            f"git show {rev}:{path} in {git_dir} failed: {proc.stderr.decode().strip()}"
        )
    return proc.stdout


def fetch_from_git(git_dir: Path, path: str, name: str, rev: str = "HEAD") -> Path:
    """Extract `path` at `rev` from a (bare) git directory and install it as data set `name`."""
    spec = _spec(name)
    return install(spec, git_show(git_dir, path, rev), f"{git_dir} {rev}:{path}")


def _git_dir(base: Path) -> Path | None:
    for candidate in (base / "repo" / ".git", base / "repo", base / ".git", base):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    return None


def _has_commit(git_dir: Path, commit: str) -> bool:
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "cat-file", "-e", f"{commit}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def fetch_mirrors(root: Path = DEFAULT_MIRROR_ROOT) -> dict[str, str]:
    """Install each data set from its source repository's mirror (<root>/<owner>+<name>)."""
    result: dict[str, str] = {}
    for spec in DATASETS.values():
        if status(spec) == "verified":
            result[spec.name] = f"already verified at {path_for(spec)}"
            continue
        git_dir = _git_dir(root / spec.source_repo.replace("/", "+"))
        if git_dir is None:
            result[spec.name] = f"no mirror of {spec.source_repo} under {root}"
            continue
        rev = spec.source_commit if _has_commit(git_dir, spec.source_commit) else "HEAD"
        try:
            path = fetch_from_git(git_dir, spec.source_path, spec.name, rev)
        except DatasetError as exc:
            result[spec.name] = str(exc)
        else:
            result[spec.name] = f"installed {path} from {git_dir} {rev}:{spec.source_path}"
    return result


def check() -> bool:
    ok = True
    print(f"data dir: {data_dir()}  (${ENV_DATA_DIR} overrides)")
    for spec in DATASETS.values():
        state = status(spec)
        ok &= state == "verified"
        print(f"{spec.name:16} {state:26} {path_for(spec)}")
        print(f"{'':16} {spec.rows:,} rows, sha256 {spec.sha256}")
        if state != "verified":
            print(f"{'':16} get it from: {spec.where_to_get()}")
        print(f"{'':16} licence: {spec.licence}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="print each data set: verified / mismatch / missing")
    p_dir = sub.add_parser("fetch-from", help="copy verified files or zip members found in DIR")
    p_dir.add_argument("dir", type=Path)
    p_dir.add_argument("--only", action="append", choices=sorted(DATASETS))
    p_git = sub.add_parser("fetch-from-git", help="extract PATH from a (bare) git directory")
    p_git.add_argument("git_dir", type=Path)
    p_git.add_argument("path")
    p_git.add_argument("name", choices=sorted(DATASETS))
    p_git.add_argument("--rev", default="HEAD")
    p_mirrors = sub.add_parser("fetch-mirrors", help="install every data set from its mirror")
    p_mirrors.add_argument("--root", type=Path, default=DEFAULT_MIRROR_ROOT)
    args = parser.parse_args(argv)

    if args.command == "check":
        return 0 if check() else 1
    if args.command == "fetch-from-git":
        try:
            path = fetch_from_git(args.git_dir, args.path, args.name, args.rev)
        except DatasetError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{args.name}: installed {path}")
        return 0
    if args.command == "fetch-from":
        if not args.dir.is_dir():
            print(f"{args.dir} is not a directory", file=sys.stderr)
            return 1
        result = fetch_from(args.dir, args.only)
    else:
        result = fetch_mirrors(args.root)
    for name, outcome in result.items():
        print(f"{name}: {outcome}")
    return 0 if all(status(_spec(n)) == "verified" for n in result) else 1


if __name__ == "__main__":
    sys.exit(main())
