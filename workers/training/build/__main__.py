"""`python -m workers.training.build`: build every bundled model (skips what is up to date)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

# Module names under workers.training.build, in build order (the image tagger first: the
# GAN's quality metric embeds images with it).
BUILDERS = ["image_tagger", "text_embedder", "text_generator", "image_generator"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", default=os.environ.get("ATELIER_MODELS_DIR", "var/models"))
    parser.add_argument("--only", action="append", choices=BUILDERS, help="build only these")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    models_dir = Path(args.models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only or BUILDERS:
        mod = importlib.import_module(f"workers.training.build.{name}")
        t0 = time.perf_counter()
        print(f"[models] {name}: building into {models_dir} ...", flush=True)
        path = mod.build(models_dir, force=args.force, log=lambda m: print(f"  {m}", flush=True))
        print(f"[models] {name}: ready at {path} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
