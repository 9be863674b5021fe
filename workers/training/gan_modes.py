"""Self-conditioning (Liu et al. 2020, "Diverse image generation via self-conditioned GANs"):
the training images are split into modes, k-means clusters of their thumbnails within each tag,
and the generator and discriminator are conditioned on the mode instead of the tag. Each mode
is a tighter group than a tag (a tag such as ``object`` spans hundreds of unlike drawings), and
drawing modes with their training frequencies makes the generator cover all of them instead of
the few the discriminator lets through.

Serving keeps the public contract: a request names a tag (or none), and the server draws a
mode of that tag with the training frequencies (``preprocessing.modes`` in the manifest).

The clusters are of 16x16 colour thumbnails, not of the image tagger's embedding: that
embedding is what the Frechet distance is measured on, and clustering on it would tune the
generator to the metric's own features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

THUMBNAIL = 16
# A mode needs a few images to be a group at all.
MIN_IMAGES_PER_MODE = 4


def thumbnails(images: torch.Tensor) -> np.ndarray:
    """``[n, 3 * 16 * 16]``: area-averaged thumbnails of ``[n, 3, H, W]`` images."""
    small = F.adaptive_avg_pool2d(images.float(), THUMBNAIL)
    return small.reshape(len(images), -1).numpy()


def split_modes(
    images: torch.Tensor,
    tags: torch.Tensor | None,
    n_modes: int,
    seed: int,
    min_per_tag: int = 1,
) -> tuple[torch.Tensor, list[int]]:
    """A mode per image and the tag of each mode (all 0 for untagged images).

    ``n_modes`` is shared out between tags in proportion to their images, at least
    ``min_per_tag`` modes per tag and at most one per :data:`MIN_IMAGES_PER_MODE` images."""
    from sklearn.cluster import KMeans

    if n_modes < 1:
        raise ValueError("n_modes must be >= 1")
    tags = tags if tags is not None else torch.zeros(len(images), dtype=torch.long)
    thumbs = thumbnails(images)
    modes = torch.empty(len(images), dtype=torch.long)
    mode_tag: list[int] = []
    for tag in sorted(set(tags.tolist())):
        idx = (tags == tag).nonzero().view(-1)
        k = round(n_modes * len(idx) / len(images))
        k = max(1, min(max(k, min_per_tag), len(idx) // MIN_IMAGES_PER_MODE))
        if k == 1:
            found = np.zeros(len(idx), np.int64)
        else:
            found = KMeans(k, n_init=4, random_state=seed).fit(thumbs[idx.numpy()]).labels_
        modes[idx] = torch.as_tensor(found, dtype=torch.long) + len(mode_tag)
        mode_tag += [int(tag)] * k
    return modes, mode_tag
