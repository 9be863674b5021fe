"""A picture of what the bundled image generator draws, next to real icons.

    python bench/gan_grid.py [--models var/models] [--out docs/images/gan_grid.png] [--seed 0]
    python bench/gan_grid.py --score 500   # also: FID of 500 served images, beside the manifest's

A model trained with tags gets one row per tag: eight generated icons of that tag, then three
real held-out icons of the same tag. A model without tags gets four rows of generated icons and
two of real ones. Generation goes through the serving class (onnxruntime), at the truncation
the API uses by default (2.0), so the picture shows what a client gets; the real icons are ones
training held out.

``--score N`` draws N images through the same serving class (tags drawn as for a request
without one) and scores them as the build did: FID, precision and recall on the image tagger's
embedding against the held-out icons, printed beside the figures in the manifest, which came
from the torch generator in training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.schemas.generation import DEFAULT_TRUNCATION
from workers.generation.image import MAX_IMAGES, ImageGenerator
from workers.training.build.image_generator import NAME, VERSION, load_openmoji_tagged
from workers.training.gan_recipe import GANConfig, heldout_split

SCALE = 2
CELL = 64 * SCALE
PAD = 6
LABEL_W = 120
FAKE_COLS = 8
REAL_COLS = 3


def heldout_icons() -> tuple[list[Image.Image], list[str]]:
    """The icons the bundled build held out from training, with their tags."""
    images, tags = load_openmoji_tagged()
    idx = heldout_split(len(images), GANConfig())[0].tolist()
    return [images[i] for i in idx], [tags[i] for i in idx]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def grid(rows: list[tuple[str, list[Image.Image], list[Image.Image]]]) -> Image.Image:
    """Rows of (label, generated, real); the real column appears only when some row has one."""
    real_cols = max(len(r) for _, _, r in rows)
    cols = max(len(f) for _, f, _ in rows) + real_cols
    width = LABEL_W + cols * (CELL + PAD) + 3 * PAD
    head = 28 if real_cols else 0
    out = Image.new("RGB", (width, head + len(rows) * (CELL + PAD) + PAD), "white")
    draw = ImageDraw.Draw(out)
    font = _font(18)
    fake_w = FAKE_COLS * (CELL + PAD)
    if real_cols:
        draw.text((LABEL_W, 4), "generated", fill="black", font=font)
        draw.text((LABEL_W + fake_w + 3 * PAD, 4), "real (held out)", fill="black", font=font)
    for r, (label, fake, real) in enumerate(rows):
        y = head + r * (CELL + PAD)
        draw.text((8, y + CELL // 2 - 10), label, fill="black", font=font)
        for c, im in enumerate(fake):
            out.paste(
                im.resize((CELL, CELL), Image.Resampling.NEAREST), (LABEL_W + c * (CELL + PAD), y)
            )
        x0 = LABEL_W + fake_w + 3 * PAD
        for c, im in enumerate(real):
            out.paste(im.resize((CELL, CELL), Image.Resampling.NEAREST), (x0 + c * (CELL + PAD), y))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("var/models"))
    ap.add_argument("--out", type=Path, default=Path("docs/images/gan_grid.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--score", type=int, default=0, help="also score this many served images")
    ap.add_argument("--truncation", type=float, default=DEFAULT_TRUNCATION, help="as the API's")
    args = ap.parse_args(argv)

    gen = ImageGenerator(args.models / NAME / VERSION)
    real, real_tags = heldout_icons()
    rows: list[tuple[str, list[Image.Image], list[Image.Image]]] = []
    if gen.tags:
        for k, tag in enumerate(gen.tags):
            mine = [im for im, t in zip(real, real_tags, strict=True) if t == tag]
            fake = gen.generate(FAKE_COLS, seed=args.seed + k, tag=tag, truncation=args.truncation)
            rows.append((tag, fake, mine[:REAL_COLS]))
    else:
        fake = gen.generate(4 * FAKE_COLS, seed=args.seed, truncation=args.truncation)
        picks = np.random.default_rng(args.seed).choice(len(real), 2 * FAKE_COLS, replace=False)
        for r in range(4):
            rows.append(("generated", fake[r * FAKE_COLS : (r + 1) * FAKE_COLS], []))
        for r in range(2):
            chosen = [real[i] for i in picks[r * FAKE_COLS : (r + 1) * FAKE_COLS]]
            rows.append(("real", chosen, []))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # An adaptive 256-colour palette keeps the README image small; icons have few colours.
    grid(rows).quantize(256).save(args.out, optimize=True)
    m = gen.manifest.metrics
    print(f"wrote {args.out} from {gen.ref} (FID {m.get('fid', float('nan')):.3f})")
    if args.score:
        score(gen, real, args.models, args.score, args.seed, args.truncation)
    return 0


def served_images(
    gen: ImageGenerator,
    n: int,
    seed: int,
    tag: str | None = None,
    truncation: float = DEFAULT_TRUNCATION,
) -> list[Image.Image]:
    """``n`` images as clients get them: a request draws at most MAX_IMAGES, so one block per
    request, seeds ``seed``, ``seed + MAX_IMAGES``, ..."""
    return [
        im
        for i in range(0, n, MAX_IMAGES)
        for im in gen.generate(
            min(MAX_IMAGES, n - i), seed=seed + i, tag=tag, truncation=truncation
        )
    ]


def score(
    gen: ImageGenerator,
    real: list[Image.Image],
    models: Path,
    n: int,
    seed: int,
    truncation: float = DEFAULT_TRUNCATION,
) -> None:
    images = served_images(gen, n, seed, truncation=truncation)
    m = gen.manifest.metrics
    score_beside(images, real, models, m, "served")
    print(f"({n} served images, seed {seed}, truncation {truncation}; manifest: "
          f"{m.get('fid_samples')} from training, untruncated)")  # fmt: skip


def score_beside(
    images: list[Image.Image],
    real: list[Image.Image],
    models: Path,
    manifest: dict[str, Any] | None,
    label: str,
) -> None:
    """Score ``images`` against ``real`` as the build does (image tagger embedding) and print
    the figures beside the manifest's (a blank column without one)."""
    from shared.inference.registry import ModelRegistry
    from workers.tagging.image import ImageTagger
    from workers.training.gan_metrics import featurize, set_metrics, tagger_features

    features = tagger_features(ModelRegistry(models).get("image_tagger", ImageTagger))
    got = set_metrics(featurize(features, images), featurize(features, real))
    print(f"{'':>28} {label:>10} {'manifest' if manifest else '':>9}")
    for key in ("fid", "precision", "recall", "concept_overlap"):
        theirs = f"{manifest.get(key, float('nan')):9.3f}" if manifest else ""
        print(f"{key:>28} {got.get(key, float('nan')):10.3f} {theirs}")


if __name__ == "__main__":
    raise SystemExit(main())
