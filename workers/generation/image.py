"""Serve the GAN image generator (onnxruntime + numpy only).

Latent vector ``i`` of a request with seed ``s`` comes from ``numpy.random.default_rng([s, i])``,
so image ``i`` is the same whatever ``n`` is (``generate(4, seed=s)`` is a prefix of
``generate(8, seed=s)``) and ``interpolate(a, b, ...)`` starts and ends at
``generate(1, seed=a)`` and ``generate(1, seed=b)``.

A model trained with tags (its manifest lists them under ``preprocessing.tags``) takes a tag
index per latent: ``generate(..., tag="face")`` uses that tag for every image; without a tag,
image ``i`` gets one drawn from ``default_rng([s, i, 1])`` with the training frequencies, so the
prefix property holds for tags too. A model trained without tags refuses a tag
(``UnknownTag``, a ValueError).

A self-conditioned model (``preprocessing.modes``: the tag of each mode and its training count)
takes a mode per latent instead: image ``i`` gets a mode drawn from the same
``default_rng([s, i, 1])`` with the training frequencies, among the asked tag's modes or,
without a tag, among all of them.

A model published with its critic (``preprocessing.critic``: the discriminator's auxiliary tag
classifier, a candidate count ``k`` and a proposal) answers a tagged request with, per image,
one of ``k`` drawings: candidate 0 is the drawing above, candidate ``c`` > 0 takes its latent
and mode from ``default_rng([s, i, 2, c])`` and ``default_rng([s, i, 3, c])``, the modes drawn
among all (proposal ``all``) or the tag's (``tag``), and one candidate is drawn from
``default_rng([s, i, 4])`` with weight the classifier's probability of the asked tag. Each image
still depends only on ``(s, i)``, so the prefix property holds. Untagged requests and
interpolations are not resampled.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image
from scipy.special import log_softmax

from shared.inference.base import InferenceModel
from shared.model_versions import UnknownTag
from shared.schemas.generation import DEFAULT_TRUNCATION

MAX_IMAGES = 64
MAX_STEPS = 64
MIN_TRUNCATION = 0.05
MAX_TRUNCATION = 10.0


class ImageGenerator(InferenceModel):
    kind: ClassVar[str] = "image_generator"

    def _load(self) -> None:
        self._session = self.session("model.onnx")
        pre = self.manifest.preprocessing
        self.latent = int(pre.get("latent", 100))
        self.tags = self.manifest.tags
        # The model's label is a mode; a model without self-conditioning modes has one per tag
        # (mode k is tag k), so both kinds draw labels the same way.
        modes = pre.get("modes") or {
            "tag": list(range(len(self.tags))),
            "counts": pre.get("tag_counts") or [1] * len(self.tags),
        }
        self._mode_tag = np.asarray(modes["tag"], np.int64)
        self._mode_counts = np.asarray(modes["counts"], np.float64)
        critic = pre.get("critic") or {}
        self.candidates = int(critic.get("candidates", 1))
        self.proposal = str(critic.get("proposal", "all"))
        self._critic = self.session(str(critic["file"])) if critic else None

    def _predict(self, n: int, **kwargs: Any) -> list[Image.Image]:
        return self.generate(n, **kwargs)

    def latents(
        self, n: int, *, seed: int, truncation: float = DEFAULT_TRUNCATION, candidate: int = 0
    ) -> np.ndarray:
        """``z[n, latent]``: standard normal, entries beyond +-truncation drawn again; a
        ``candidate`` > 0 gives the critic's further drawings of the same images."""
        _check_seed(seed)
        _check_truncation(truncation)
        return np.stack([self._latent(seed, i, truncation, candidate) for i in range(n)])

    def _latent(self, seed: int, index: int, truncation: float, candidate: int = 0) -> np.ndarray:
        key = [seed, index] if candidate == 0 else [seed, index, 2, candidate]
        rng = np.random.default_rng(key)
        z = rng.standard_normal(self.latent)
        # Resampling (not clipping) keeps the values inside the bound normally distributed.
        while (out := np.abs(z) > truncation).any():
            z[out] = rng.standard_normal(int(out.sum()))
        return z.astype(np.float32)

    def labels(
        self, n: int, *, seed: int, tag: str | None = None, candidate: int = 0
    ) -> np.ndarray | None:
        """``label[n]`` int64 for a model trained with tags (None for one without): the index
        of ``tag``, or per image a tag drawn with the training frequencies; for a self-conditioned
        model, per image a mode of ``tag`` (of any tag without one)."""
        if tag is not None:
            self._check_tag(tag)
        if not len(self._mode_tag):
            return None
        keys = [[seed, i, 1] if candidate == 0 else [seed, i, 3, candidate] for i in range(n)]
        modes = np.arange(len(self._mode_tag))
        if tag is not None:
            modes = modes[self._mode_tag == self.tags.index(tag)]
            if not len(modes):
                raise ValueError(f"{self.ref} saw no images of tag {tag!r} in training")
        p = self._mode_counts[modes] / self._mode_counts[modes].sum()
        return np.array([np.random.default_rng(key).choice(modes, p=p) for key in keys], np.int64)

    def _check_tag(self, tag: str) -> None:
        if tag not in self.tags:
            raise UnknownTag(tag, self.ref, self.tags)

    def run(self, z: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
        """Raw model: ``z[batch, latent]`` (+ ``label[batch]`` for a model with tags) ->
        ``image[batch, 3, 64, 64]`` in [-1, 1]."""
        feeds = {"z": np.ascontiguousarray(z, np.float32)}
        if label is not None:
            feeds["label"] = np.ascontiguousarray(label, np.int64)
        (images,) = self._session.run(None, feeds)
        return images

    def generate(
        self, n: int, *, seed: int, truncation: float = DEFAULT_TRUNCATION, tag: str | None = None
    ) -> list[Image.Image]:
        """``n`` 64x64 RGB images. Smaller ``truncation`` trades variety for cleaner images;
        ``tag`` (a model trained with tags only) picks what they show."""
        if not _is_int(n) or not 1 <= n <= MAX_IMAGES:
            raise ValueError(f"n must be an integer in 1..{MAX_IMAGES}, got {n!r}")
        if tag is not None and self._critic is not None and self.candidates > 1:
            return to_pil(self._resampled(n, seed, truncation, tag))
        z = self.latents(n, seed=seed, truncation=truncation)
        return to_pil(self.run(z, self.labels(n, seed=seed, tag=tag)))

    def _resampled(self, n: int, seed: int, truncation: float, tag: str) -> np.ndarray:
        """Per image, one of ``self.candidates`` drawings, drawn with weight ``p(tag | image)``
        by the critic: ``image[n, 3, 64, 64]``."""
        k = self.candidates
        self._check_tag(tag)
        # The proposal: drawings of any mode (the untagged generator, so candidate 0 is the
        # untagged request's image) or of the tag's modes only.
        modes_of = tag if self.proposal == "tag" else None
        # Candidate-major: rows c * n .. c * n + n - 1 are candidate c of images 0..n-1.
        z = np.concatenate([self.latents(n, seed=seed, truncation=truncation, candidate=c)
                            for c in range(k)])  # fmt: skip
        labels = [self.labels(n, seed=seed, tag=modes_of, candidate=c) for c in range(k)]
        images = self.run(z, np.concatenate([lab for lab in labels if lab is not None]))
        log_w = self._critic_log_p(images)[:, self.tags.index(tag)].reshape(k, n)
        # Drawn, not the best: sampling-importance-resampling from the generator's drawings
        # with weight p(tag | image) draws from p(image | tag) as far as the critic is right;
        # the best of k is each tag's most typical drawing k times over, without the tag's
        # variety (docs/image-generator.md).
        w = np.exp(log_w - log_w.max(0))
        p = w / w.sum(0)
        pick = [np.random.default_rng([seed, i, 4]).choice(k, p=p[:, i]) for i in range(n)]
        return images.reshape(k, n, *images.shape[1:])[pick, np.arange(n)]

    @property
    def has_critic(self) -> bool:
        return self._critic is not None

    def critic_tags(self, images: list[Image.Image]) -> list[str]:
        """The tag the critic gives each 64x64 RGB image (ValueError without a critic)."""
        if self._critic is None:
            raise ValueError(f"{self.ref} was published without a critic")
        log_p = self._critic_log_p(from_pil(images))
        return [self.tags[int(i)] for i in log_p.argmax(1)]

    def _critic_log_p(self, images: np.ndarray) -> np.ndarray:
        """``log p(tag | image)[batch, tags]`` of ``image[batch, 3, 64, 64]`` in [-1, 1]."""
        assert self._critic is not None
        (logits,) = self._critic.run(None, {"image": np.ascontiguousarray(images, np.float32)})
        log_p: np.ndarray = log_softmax(logits.astype(np.float64), axis=1)
        return log_p

    def interpolate(
        self,
        seed_a: int,
        seed_b: int,
        steps: int,
        *,
        truncation: float = DEFAULT_TRUNCATION,
        tag: str | None = None,
    ) -> list[Image.Image]:
        """``steps`` images along the spherical path between the latents of two seeds. With
        tags, the whole walk keeps ``tag`` or else the tag ``seed_a``'s first image gets."""
        if not _is_int(steps) or not 2 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer in 2..{MAX_STEPS}, got {steps!r}")
        _check_seed(seed_a)
        _check_seed(seed_b)
        _check_truncation(truncation)
        za = self._latent(seed_a, 0, truncation)
        zb = self._latent(seed_b, 0, truncation)
        z = np.stack([slerp(za, zb, t) for t in np.linspace(0.0, 1.0, steps)])
        label = self.labels(1, seed=seed_a, tag=tag)
        return to_pil(self.run(z, None if label is None else np.repeat(label, steps)))


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation: Gaussian latents live near a sphere, and a straight line
    between two of them passes through the low-norm interior the generator rarely saw."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = np.dot(a64, b64) / (np.linalg.norm(a64) * np.linalg.norm(b64))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
        return ((1 - t) * a64 + t * b64).astype(np.float32)
    s = np.sin(omega)
    return ((np.sin((1 - t) * omega) * a64 + np.sin(t * omega) * b64) / s).astype(np.float32)


def to_pil(images: np.ndarray) -> list[Image.Image]:
    arr = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return [Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)), "RGB") for a in arr]


def from_pil(images: list[Image.Image]) -> np.ndarray:
    """The inverse of :func:`to_pil`: ``image[batch, 3, h, w]`` float32 in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), np.float32) for im in images])
    out: np.ndarray = arr.transpose(0, 3, 1, 2) / 127.5 - 1.0
    return out


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _check_seed(seed: object) -> None:
    if not _is_int(seed) or seed < 0:  # type: ignore[operator]
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _check_truncation(truncation: object) -> None:
    ok = isinstance(truncation, int | float | np.integer | np.floating) and not isinstance(
        truncation, bool
    )
    if not ok or not MIN_TRUNCATION <= truncation <= MAX_TRUNCATION:  # type: ignore[operator]
        raise ValueError(
            f"truncation must be in [{MIN_TRUNCATION}, {MAX_TRUNCATION}], got {truncation!r}"
        )
