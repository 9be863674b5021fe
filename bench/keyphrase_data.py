"""Public keyphrase data sets (documents + gold keyphrases), kept out of git, verified by sha256.

Same rules as bench/datasets.py: the archives are not ours to redistribute, so they live in the
data directory (env ATELIER_BENCH_DATA, default bench/data/, git-ignored) as
<data dir>/<name>/<file>, and `load` refuses an archive whose sha256 is not the published one.

    python -m bench.keyphrase_data check
    python -m bench.keyphrase_data fetch-from-git GITDIR NAME [--rev REV]
    python -m bench.keyphrase_data fetch-mirrors [--root /work/.mirror]
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bench.datasets import (
    DEFAULT_MIRROR_ROOT,
    ENV_DATA_DIR,
    DatasetError,
    data_dir,
    git_show,
    install,
    path_for,
    sha256_file,
)

SOURCE_REPO = "LIAAD/KeywordExtractor-Datasets"
SOURCE_COMMIT = "8cd1e18ab750143e2075457ef5e0481754e3e966"
LIAAD_NOTE = (
    "research data redistributed by LIAAD/KeywordExtractor-Datasets (no licence file; cite the "
    "original paper, research use only); never committed here."
)


@dataclass(frozen=True)
class KeyphraseSpec:
    """One zip of the LIAAD collection: <top>/docsutf8/<id>.txt and <top>/keys/<id>.key."""

    name: str
    filename: str
    sha256: str
    docs: int
    top: str
    description: str
    licence: str
    source_path: str

    def where_to_get(self) -> str:
        owner, repo = SOURCE_REPO.split("/", 1)
        return (
            f"GitHub {SOURCE_REPO} at commit {SOURCE_COMMIT}, path {self.source_path} "
            f"(python -m bench.keyphrase_data fetch-from-git "
            f"{DEFAULT_MIRROR_ROOT}/{owner}+{repo}/repo {self.name})"
        )


DATASETS: dict[str, KeyphraseSpec] = {
    spec.name: spec
    for spec in (
        KeyphraseSpec(
            name="inspec",
            filename="Inspec.zip",
            sha256="0868ca0753b69bcea9132def9f2a65c087bca39fc0360d82905e3debb0bf4de2",
            docs=2000,
            top="Inspec",
            description=(
                "2,000 computer-science abstracts (1998-2002) with the Inspec indexers' "
                "controlled + uncontrolled keyphrases (Hulth, EMNLP 2003)"
            ),
            licence="Inspec abstracts (IET): " + LIAAD_NOTE,
            source_path="datasets/Inspec.zip",
        ),
        KeyphraseSpec(
            name="semeval2017",
            filename="SemEval2017.zip",
            sha256="c1653edc039abdd45d747dfb73d971422355f8151cbed00ad17fbce92a0981e9",
            docs=493,
            top="SemEval2017",
            description=(
                "493 ScienceDirect paragraphs (CS, materials, physics) with expert keyphrases "
                "(SemEval 2017 task 10, Augenstein et al.)"
            ),
            licence="ScienceIE task data (Elsevier paragraphs): " + LIAAD_NOTE,
            source_path="datasets/SemEval2017.zip",
        ),
    )
}


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    keyphrases: list[str]


def _spec(name: str) -> KeyphraseSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}") from None


def verify(name: str) -> Path:
    spec = _spec(name)
    path = path_for(spec)
    if not path.is_file():
        raise DatasetError(
            f"{spec.name}: {path} is missing. Put {spec.filename} (sha256 {spec.sha256}) there.\n"
            f"  Get it from: {spec.where_to_get()}.\n  Licence: {spec.licence}"
        )
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise DatasetError(f"{spec.name}: {path} has sha256 {actual}, expected {spec.sha256}")
    return path


def parse(spec: KeyphraseSpec, data: bytes) -> list[Document]:
    """Documents sorted by numeric id; line breaks and tabs in texts and keys become spaces."""
    docs: list[Document] = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        prefix = f"{spec.top}/docsutf8/"
        for member in names:
            if not (member.startswith(prefix) and member.endswith(".txt")):
                continue
            doc_id = member[len(prefix) : -len(".txt")]
            key_member = f"{spec.top}/keys/{doc_id}.key"
            if key_member not in names:
                continue
            text = " ".join(zf.read(member).decode("utf-8", errors="replace").split())
            keys = [
                " ".join(line.split())
                for line in zf.read(key_member).decode("utf-8", errors="replace").splitlines()
            ]
            docs.append(Document(doc_id, text, [k for k in keys if k]))
    if len(docs) != spec.docs:
        raise DatasetError(f"{spec.name}: {len(docs)} documents with keys, expected {spec.docs}")
    docs.sort(key=lambda d: (int(d.doc_id) if d.doc_id.isdigit() else 1 << 62, d.doc_id))
    return docs


def load(name: str) -> list[Document]:
    return parse(_spec(name), verify(name).read_bytes())


def fetch_from_git(git_dir: Path, name: str, rev: str = "HEAD") -> Path:
    spec = _spec(name)
    data = git_show(git_dir, spec.source_path, rev)
    return install(spec, data, f"{git_dir} {rev}:{spec.source_path}")


def fetch_mirrors(root: Path = DEFAULT_MIRROR_ROOT) -> dict[str, str]:
    git_dir = root / SOURCE_REPO.replace("/", "+") / "repo"
    result: dict[str, str] = {}
    for name in DATASETS:
        try:
            result[name] = f"installed {fetch_from_git(git_dir, name)}"
        except DatasetError as exc:
            result[name] = str(exc)
    return result


def check() -> bool:
    ok = True
    print(f"data dir: {data_dir()}  (${ENV_DATA_DIR} overrides)")
    for spec in DATASETS.values():
        try:
            verify(spec.name)
            state = "verified"
        except DatasetError as exc:
            state, ok = str(exc).splitlines()[0], False
        print(f"{spec.name:12} {state}\n{'':12} {spec.description}")
        print(f"{'':12} from: {spec.where_to_get()}\n{'':12} licence: {spec.licence}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check")
    p_git = sub.add_parser("fetch-from-git")
    p_git.add_argument("git_dir", type=Path)
    p_git.add_argument("name", choices=sorted(DATASETS))
    p_git.add_argument("--rev", default="HEAD")
    p_mirrors = sub.add_parser("fetch-mirrors")
    p_mirrors.add_argument("--root", type=Path, default=DEFAULT_MIRROR_ROOT)
    args = parser.parse_args(argv)
    if args.command == "check":
        return 0 if check() else 1
    try:
        if args.command == "fetch-from-git":
            print(f"{args.name}: installed {fetch_from_git(args.git_dir, args.name, args.rev)}")
        else:
            for name, line in fetch_mirrors(args.root).items():
                print(f"{name}: {line}")
    except DatasetError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
