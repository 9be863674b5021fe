"""Serve the GAN image generator (onnxruntime + numpy only).

Latent vector ``i`` of a request with seed ``s`` comes from ``numpy.random.default_rng([s, i])``,
so image ``i`` is the same whatever ``n`` is (``generate(4, seed=s)`` is a prefix of
``generate(8, seed=s)``) and ``interpolate(a, b, ...)`` starts and ends at
``generate(1, seed=a)`` and ``generate(1, seed=b)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image

from shared.inference.base import InferenceModel

MAX_IMAGES = 64
MAX_STEPS = 64
MIN_TRUNCATION = 0.05
MAX_TRUNCATION = 10.0


class ImageGenerator(InferenceModel):
    kind: ClassVar[str] = "image_generator"

    def _load(self) -> None:
        self._session = self.session("model.onnx")
        self.latent = int(self.manifest.preprocessing.get("latent", 100))

    def _predict(self, n: int, **kwargs: Any) -> list[Image.Image]:
        return self.generate(n, **kwargs)

    def latents(self, n: int, *, seed: int, truncation: float = 1.0) -> np.ndarray:
        """``z[n, latent]``: standard normal, entries beyond +-truncation drawn again."""
        _check_seed(seed)
        _check_truncation(truncation)
        return np.stack([self._latent(seed, i, truncation) for i in range(n)])

    def _latent(self, seed: int, index: int, truncation: float) -> np.ndarray:
        rng = np.random.default_rng([seed, index])
        z = rng.standard_normal(self.latent)
        # Resampling (not clipping) keeps the values inside the bound normally distributed.
        while (out := np.abs(z) > truncation).any():
            z[out] = rng.standard_normal(int(out.sum()))
        return z.astype(np.float32)

    def run(self, z: np.ndarray) -> np.ndarray:
        """Raw model: ``z[batch, latent]`` -> ``image[batch, 3, 64, 64]`` in [-1, 1]."""
        (images,) = self._session.run(None, {"z": np.ascontiguousarray(z, np.float32)})
        return images

    def generate(self, n: int, *, seed: int, truncation: float = 1.0) -> list[Image.Image]:
        """``n`` 64x64 RGB images. Smaller ``truncation`` trades variety for cleaner images."""
        if not _is_int(n) or not 1 <= n <= MAX_IMAGES:
            raise ValueError(f"n must be an integer in 1..{MAX_IMAGES}, got {n!r}")
        return to_pil(self.run(self.latents(n, seed=seed, truncation=truncation)))

    def interpolate(
        self, seed_a: int, seed_b: int, steps: int, *, truncation: float = 1.0
    ) -> list[Image.Image]:
        """``steps`` images along the spherical path between the latents of two seeds."""
        if not _is_int(steps) or not 2 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be an integer in 2..{MAX_STEPS}, got {steps!r}")
        _check_seed(seed_a)
        _check_seed(seed_b)
        _check_truncation(truncation)
        za = self._latent(seed_a, 0, truncation)
        zb = self._latent(seed_b, 0, truncation)
        z = np.stack([slerp(za, zb, t) for t in np.linspace(0.0, 1.0, steps)])
        return to_pil(self.run(z))


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
