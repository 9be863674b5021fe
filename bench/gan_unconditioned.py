"""The bundled image generator's recipe trained on the same icons without tags, for the
per-tag comparison of ``bench/gan_tag_seeds.py --unconditioned``.

    python bench/gan_unconditioned.py --out /tmp/uncond [--models var/models]
    python bench/gan_tag_seeds.py --unconditioned /tmp/uncond/image_generator/<VERSION>

The same steps, cap, split and threads as ``python -m workers.training.build --only
image_generator``; without tags there is no auxiliary tag classifier and no critic, and the
self-conditioning modes are clusters of all the icons instead of within each tag. The image
tagger of ``--models`` is linked into ``--out`` so the build's FID uses the same embedding.
Takes as long as the bundled build (up to 45 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.training.build.image_generator import NAME, VERSION, build

# CONFIG_OVERRIDES fields that need tags, switched off.
UNTAGGED = {"aux_tag": 0.0, "aux_skip": (), "tag_candidates": 1, "min_modes_per_tag": 1}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="a models directory to build into")
    ap.add_argument("--models", type=Path, default=Path("var/models"))
    args = ap.parse_args(argv)

    tagger = (args.models / "image_tagger").resolve()
    if not tagger.is_dir():
        print(f"no image tagger in {args.models}: run `make models-serving` first")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    link = args.out / "image_tagger"
    if not link.exists():
        link.symlink_to(tagger)
    target = build(args.out, force=True, conditional=False, config=UNTAGGED)
    print(f"{NAME}/{VERSION} without tags: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
