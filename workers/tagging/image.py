"""Image tagging: EfficientNet-Lite0 ImageNet classes plus their WordNet parent concepts.

A photo of a tabby gets the fine class ("tabby") and the broader tags a CMS vocabulary is more
likely to hold ("domestic cat", "cat", "animal"); a parent concept scores the summed probability
of the classes under it, and is a tag only when it says something its children do not
(``workers/tagging/concepts.py``: one tag per concept, each with its ``level``). The pooled
1280-d feature is returned as an L2-normalised embedding for similarity search and for the
generator's quality metric.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageFile, ImageOps

from shared.inference.base import InferenceModel
from shared.model_versions import ModelError
from workers.tagging.concepts import Level, plan_tags, select

MODEL_FILE = "model.onnx"
TAXONOMY_FILE = "taxonomy.json"
IMAGE_SIZE = 224
RESIZE_SIZE = 256
MEAN = 127.0
STD = 128.0
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass(slots=True)
class ImageTags:
    labels: list[tuple[str, float]]  # fine classes and parent concepts, best first
    embedding: np.ndarray  # (1280,) float32, L2-normalised
    # "class" (a model output) or "concept" (a WordNet parent), by label name. Kept beside the
    # (name, score) pairs, which callers such as the image vocabulary read as pairs.
    levels: dict[str, Level] = field(default_factory=dict)


def _to_rgb_or_l(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode to RGB or L (L stays single-channel until after the resize)."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode in _SIXTEEN_BIT_MODES:
        # convert("L") clips 16-bit values at 255, which turns most of a 16-bit scan white.
        a = np.asarray(image, dtype=np.float32)
        peak = float(a.max()) if a.size else 0.0
        if mode == "F" and peak <= 1.0:
            a = a * 255.0
        elif peak > 255.0:
            a = a * (255.0 / 65535.0)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels hold arbitrary colour; logos and cut-outs read as meant on white.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def preprocess_image(
    image: Image.Image,
    *,
    size: int = IMAGE_SIZE,
    resize: int = RESIZE_SIZE,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Shorter side to ``resize`` (bicubic), centre crop ``size``, RGB, ``(x - 127) / 128``, CHW.

    ``out`` lets a caller write straight into its batch array. Raises ``ValueError`` on an image
    that cannot be decoded, so callers can answer "bad input" rather than "server error".
    """
    try:
        if isinstance(image, ImageFile.ImageFile) and image.format == "JPEG" and image.tile:
            # Not loaded yet: let libjpeg decode at 1/2, 1/4 or 1/8 scale straight from the DCT.
            # draft keeps both sides >= resize, so the shorter side still reaches ``resize``.
            image.draft("RGB", (resize, resize))
        image.load()  # decode here, so a broken file is reported as bad input
        if image.getexif().get(_EXIF_ORIENTATION, 1) in range(2, 9):
            image = ImageOps.exif_transpose(image)
        image = _to_rgb_or_l(image)
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's decode errors
        raise ValueError(f"cannot decode image: {exc}") from exc
    w, h = image.size
    if w < 1 or h < 1:
        raise ValueError(f"empty image ({w}x{h})")
    if min(w, h) == resize and w >= size and h >= size:
        # Already at the resize step (a working copy): the centre crop needs no resampling.
        left, top = round((w - size) / 2), round((h - size) / 2)
        image = image.crop((left, top, left + size, top + size))
        return _to_chw(np.asarray(image), out)
    # Crop in source coordinates and resample only that box: same pixels as resize-then-crop,
    # without resampling the parts the crop throws away.
    scale = resize / min(w, h)
    crop = size / scale
    x0 = (w - crop) / 2
    y0 = (h - crop) / 2
    image = image.resize(
        (size, size),
        Image.Resampling.BICUBIC,
        box=(x0, y0, x0 + crop, y0 + crop),
        reducing_gap=3.0,
    )
    return _to_chw(np.asarray(image), out)


def _to_chw(pixels: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """(size, size, 3) or (size, size) uint8 -> (3, size, size) float32, ``(x - 127) / 128``."""
    size = pixels.shape[0]
    if out is None:
        out = np.empty((3, size, size), dtype=np.float32)
    if pixels.ndim == 2:
        np.subtract(pixels, MEAN, out=out[0], dtype=np.float32)
        out[0] *= 1.0 / STD
        out[1] = out[0]
        out[2] = out[0]
    else:
        np.subtract(pixels.transpose(2, 0, 1), MEAN, out=out, dtype=np.float32)
        out *= 1.0 / STD  # exact: STD is a power of two
    return out


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    unit: np.ndarray = (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


class ImageTagger(InferenceModel):
    kind: ClassVar[str] = "image_tagger"
    default_max_batch: ClassVar[int] = 32

    def __init__(self, *args: Any, max_batch: int | None = None, **kwargs: Any) -> None:
        self.max_batch = max(1, max_batch or self.default_max_batch)
        super().__init__(*args, **kwargs)

    def _load(self) -> None:
        pre = self.manifest.preprocessing
        self.size = int(pre.get("size", IMAGE_SIZE))
        self.resize = int(pre.get("resize", RESIZE_SIZE))
        if (float(pre.get("mean", MEAN)), float(pre.get("std", STD))) != (MEAN, STD):
            raise ModelError(f"{self.ref}: unsupported normalisation {pre}")
        self._session = self.session(MODEL_FILE)
        self._input = self._session.get_inputs()[0].name
        outputs = {o.name: o for o in self._session.get_outputs()}
        if not {"logits", "embedding"} <= outputs.keys():
            raise ModelError(f"{self.ref}: model outputs {sorted(outputs)}, need logits+embedding")
        try:
            taxonomy = json.loads((self.model_dir / TAXONOMY_FILE).read_text())
            classes = taxonomy["classes"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{self.ref}: unreadable {TAXONOMY_FILE}: {exc}") from exc
        n_classes = outputs["logits"].shape[-1]
        self.embedding_dim: int = int(outputs["embedding"].shape[-1])
        if len(classes) != n_classes:
            raise ModelError(f"{self.ref}: {len(classes)} class names for {n_classes} logits")
        self.class_names: list[str] = [c["name"] for c in classes]
        # Abstract nodes and single-child links are left out here, once; the rest are judged
        # per photo in ``_labels``. A gather + reduceat over the flattened member lists scores
        # all tags in microseconds, where a dense (1000 x tags) matmul costs milliseconds.
        self._plan = plan_tags(classes)
        members = self._plan.members
        self._tag_names = self._plan.names
        index = {n: j for j, n in enumerate(self._tag_names)}
        self._class_tag = np.array([index[n] for n in self.class_names], dtype=np.int64)
        self._member_flat = np.array([i for rows in members for i in rows], dtype=np.int64)
        breadth = self._plan.breadth
        self._member_starts = np.concatenate([[0], np.cumsum(breadth)[:-1]])
        # Among equal scores the tag covering fewer classes is the more specific, so it leads.
        self._tag_breadth = breadth

    def concept_names(self) -> list[str]:
        """Every tag this model can output: the 1000 class names and the parent concepts that
        are neither abstract nor a single-child link."""
        return list(self._tag_names)

    def preprocess(self, image: Image.Image, *, out: np.ndarray | None = None) -> np.ndarray:
        return preprocess_image(image, size=self.size, resize=self.resize, out=out)

    def _batches(
        self, images: Sequence[Image.Image], max_batch: int | None
    ) -> Iterator[np.ndarray]:
        step = max(1, max_batch or self.max_batch)
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            pixels = np.empty((len(chunk), 3, self.size, self.size), dtype=np.float32)
            for k, image in enumerate(chunk):
                self.preprocess(image, out=pixels[k])
            yield pixels

    def _run(self, pixels: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        if pixels.ndim != 4 or pixels.shape[1:] != (3, self.size, self.size):
            raise ValueError(
                f"expected pixels (n, 3, {self.size}, {self.size}), got {pixels.shape}"
            )
        results: list[np.ndarray] = self._session.run(
            outputs, {self._input: np.ascontiguousarray(pixels, np.float32)}
        )
        return results

    def embed_pixels(self, batch: np.ndarray) -> np.ndarray:
        """Embeddings (n, 1280), L2-normalised, for a batch already run through ``preprocess``."""
        step = self.max_batch
        parts = [
            self._run(batch[i : i + step], ["embedding"])[0] for i in range(0, len(batch), step)
        ]
        if not parts:
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        return l2_normalise(np.concatenate(parts))

    def embed(self, images: Sequence[Image.Image], *, max_batch: int | None = None) -> np.ndarray:
        parts = [self._run(p, ["embedding"])[0] for p in self._batches(images, max_batch)]
        if not parts:
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        return l2_normalise(np.concatenate(parts))

    def predict(
        self,
        images: Sequence[Image.Image],
        *,
        top_k: int = 10,
        min_score: float = 0.05,
        max_batch: int | None = None,
        every_concept: bool = False,
    ) -> list[ImageTags]:
        """Tags per image, best first. ``every_concept`` skips the per-photo rule and returns
        every candidate parent with its summed score (for measuring, not for serving)."""
        return self._predict(
            images,
            top_k=top_k,
            min_score=min_score,
            max_batch=max_batch,
            every_concept=every_concept,
        )

    def _predict(
        self,
        images: Sequence[Image.Image],
        *,
        top_k: int = 10,
        min_score: float = 0.05,
        max_batch: int | None = None,
        every_concept: bool = False,
    ) -> list[ImageTags]:
        results: list[ImageTags] = []
        for pixels in self._batches(images, max_batch):
            logits, embedding = self._run(pixels, ["logits", "embedding"])
            probs = _softmax(logits)
            scores = np.add.reduceat(probs[:, self._member_flat], self._member_starts, axis=1)
            np.minimum(scores, 1.0, out=scores)
            embedding = l2_normalise(embedding)
            for row, prob, emb in zip(scores, probs, embedding, strict=True):
                labels = self._labels(row, prob, top_k, min_score, every_concept)
                levels = {name: self._plan.levels[j] for name, j in labels}
                results.append(
                    ImageTags([(name, float(row[j])) for name, j in labels], emb, levels)
                )
        return results

    def _labels(
        self,
        scores: np.ndarray,
        probs: np.ndarray,
        top_k: int,
        min_score: float,
        every_concept: bool = False,
    ) -> list[tuple[str, int]]:
        """(name, tag index) of the labels to return, best first."""
        keep = np.flatnonzero(scores >= min_score).tolist()
        # The best fine class always comes back, so an uncertain photo still gets one label.
        best = int(self._class_tag[int(np.argmax(probs))])
        if best not in keep:
            keep.append(best)
        if not every_concept:
            # Before top_k: a parent that repeats its child must not take another tag's place.
            keep = select(self._plan, scores, keep)
        order = sorted(keep, key=lambda j: (-scores[j], self._tag_breadth[j]))
        return [(self._tag_names[j], j) for j in order[: max(1, top_k)]]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z: np.ndarray = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z
