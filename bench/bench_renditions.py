"""What the upload renditions cost and what they change, side by side in one run.

    python bench/bench_renditions.py [--repeats 30] [--models-dir var/models]

1. Thumbnail encoding (256 px, from scikit-image photos): JPEG q80 vs WebP q80 method 2, ms per
   image (median) and bytes; and the thumbnail resize, bilinear (ours) vs Lanczos, with the PSNR
   between the two.
2. The tagger's working copy: tags from the working copy, uncompressed (ours) or JPEG-encoded at
   q90/q95, against tags from the decoded original, on 20 scikit-image photos at 1x and 3x:
   top-1 tag agreement, top-5 overlap, embedding cosine.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import cpu_model  # noqa: E402
from skimage import data  # noqa: E402

from shared.imaging import (  # noqa: E402
    centre_square,
    decode_image,
    encode,
    make_renditions,
    thumbnail,
)
from shared.inference.registry import ModelRegistry  # noqa: E402
from workers.tagging.image import ImageTagger  # noqa: E402

PHOTOS = [
    "astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon",
    "page", "retina", "rocket", "text",
]  # fmt: skip


def _ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _uploads() -> list[tuple[str, bytes]]:
    out = []
    for name in PHOTOS:
        im = Image.fromarray(getattr(data, name)())
        for scale in (1, 3):
            scaled = im.resize((im.width * scale, im.height * scale), Image.Resampling.BICUBIC)
            out.append((f"{name} x{scale}", _jpeg(scaled, 90)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--models-dir", default=os.environ.get("ATELIER_MODELS_DIR", "var/models"))
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    uploads = _uploads()
    print(f"{cpu_model()}, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}")

    # --- 1. thumbnails -------------------------------------------------------------------
    rows: dict[str, list[float]] = {}
    for _, upload in uploads[:8]:
        image, _ = decode_image(upload, min_size=256)
        thumb = thumbnail(image, 256)
        lanczos = image.copy()
        lanczos.thumbnail((256, 256), Image.Resampling.LANCZOS, reducing_gap=1.0)
        a, b = np.asarray(thumb, float), np.asarray(lanczos, float)
        rows.setdefault("psnr", []).append(10 * np.log10(255**2 / max(np.mean((a - b) ** 2), 1e-9)))
        rows.setdefault("resize bilinear", []).append(_ms(lambda im=image: thumbnail(im, 256), 10))
        rows.setdefault("resize lanczos", []).append(
            _ms(lambda im=image: im.copy().thumbnail((256, 256), Image.Resampling.LANCZOS, 1.0), 10)
        )
        for fmt in ("jpeg", "webp"):
            rows.setdefault(f"{fmt} ms", []).append(_ms(lambda f=fmt, t=thumb: encode(t, f), 10))
            rows.setdefault(f"{fmt} bytes", []).append(len(encode(thumb, fmt)))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print("thumbnails (8 photos, medians):")
    print(
        f"  encode JPEG q80 {med['jpeg ms']:.2f} ms, {med['jpeg bytes'] / 1024:.1f} KB | "
        f"WebP q80 m2 {med['webp ms']:.2f} ms, {med['webp bytes'] / 1024:.1f} KB | "
        f"WebP / JPEG time {med['webp ms'] / med['jpeg ms']:.1f}x, "
        f"bytes {med['webp bytes'] / med['jpeg bytes']:.2f}x"
    )
    print(
        f"  resize bilinear {med['resize bilinear']:.2f} ms vs Lanczos "
        f"{med['resize lanczos']:.2f} ms; PSNR between them {med['psnr']:.1f} dB"
    )

    # --- 2. working copy vs original -----------------------------------------------------
    tagger = ModelRegistry(Path(args.models_dir), threads=1).get("image_tagger", ImageTagger)
    variants = {"uncompressed (ours)": None, "JPEG q95": 95, "JPEG q90": 90}
    stats: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    for _, upload in uploads:
        image, _ = decode_image(upload, min_size=256)
        working = make_renditions(
            image, working_size=256, thumbnail_size=256, thumbnail_format="jpeg"
        ).files[0]
        copy, _ = decode_image(working.data)
        inputs = [image, copy]
        for q in (95, 90):
            inputs.append(decode_image(_jpeg(centre_square(image, 256), q))[0])
        ref, *others = tagger.predict(inputs)
        for name, res in zip(variants, others, strict=True):
            s = stats[name]
            s.setdefault("top1", []).append(float(ref.labels[0][0] == res.labels[0][0]))
            top5 = {n for n, _ in ref.labels[:5]}
            s.setdefault("top5", []).append(len(top5 & {n for n, _ in res.labels[:5]}) / 5)
            s.setdefault("cos", []).append(float(ref.embedding @ res.embedding))
    print(f"working copy vs decoded original ({len(uploads)} photos; {tagger.ref}):")
    for name, s in stats.items():
        print(
            f"  {name:<20s} top-1 same {int(sum(s['top1']))}/{len(s['top1'])}, "
            f"top-5 overlap {np.mean(s['top5']):.3f}, cosine mean {np.mean(s['cos']):.4f} "
            f"min {min(s['cos']):.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
