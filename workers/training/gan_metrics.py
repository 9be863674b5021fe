"""How good a generated image set is, measured on an embedding of the images.

* Frechet distance (FID) between the embeddings of generated and held-out real images.
* Precision and recall of the k-NN manifolds (Kynkaanniemi et al. 2019, k=3): precision is the
  share of generated images inside the real manifold (the union of balls around each real
  embedding reaching its k-th nearest real neighbour), recall the share of real images inside
  the generated manifold. Both sets are cut to the same size first, because the ball radii
  shrink as a set grows.
* Tagger-concept share: the share of generated images whose top-1 image-tagger label (class or
  concept, as the tagger would tag an upload) is among the top-1 labels of the held-out real
  images. Lenient: a set that always gets the same common label scores 1, so it comes with
* tagger-concept overlap: sum over labels of min(share among generated, share among real) of the
  top-1 labels, 1 when the label histograms agree, the share of the one label when a set
  collapses onto it. Both are reported next to the same figures for noise images and real
  training images, which bound them from below and above.

The embedding is the image tagger's when one is available; otherwise a colour embedding that is
only comparable with the baselines reported next to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from workers.training.gan_models import SIZE, Generator, tensor_to_images

FALLBACK_EMBEDDING = (
    "fallback: 8x8 mean colours + 4x4x4 colour histogram (256-d), no image tagger available; "
    "only comparable with the baselines next to it"
)
PR_NEIGHBOURS = 3
# Per-tag FID needs a few real images of the tag in the held-out set to mean anything.
MIN_TAG_HELDOUT = 5
# Generated images per tag (and with random tags) for the per-tag figures.
PER_TAG_SAMPLES = 256

# Embeddings of a batch of images, and their top-1 tagger labels when a tagger made them.
Features = tuple[np.ndarray, list[str] | None]
FeatureFn = Callable[[list[Image.Image]], Features]
EmbedFn = Callable[[list[Image.Image]], np.ndarray]


class _Tagger(Protocol):
    def predict(self, images: Sequence[Image.Image], *, top_k: int = ...) -> list[Any]: ...


def tagger_features(tagger: _Tagger) -> FeatureFn:
    """Embedding and top-1 label from one pass of an image tagger (``ImageTagger.predict``)."""

    def features(images: list[Image.Image]) -> Features:
        tags = tagger.predict(images, top_k=1)
        return np.stack([t.embedding for t in tags]), [t.labels[0][0] for t in tags]

    return features


def embed_only(embed: EmbedFn) -> FeatureFn:
    return lambda images: (np.asarray(embed(images)), None)


def fallback_embed(images: list[Image.Image]) -> np.ndarray:
    """256-d: 8x8 mean colours plus a 4x4x4 colour histogram. Only for relative comparisons."""
    out = []
    for im in images:
        arr = np.asarray(im.convert("RGB").resize((SIZE, SIZE)), np.float32) / 255.0
        pooled = arr.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3)).ravel()
        q = np.minimum((arr * 4).astype(np.int64), 3)
        hist = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64)
        out.append(np.concatenate([pooled, hist / hist.sum()]))
    return np.stack(out)


def featurize(fn: FeatureFn, images: list[Image.Image], batch: int = 64) -> Features:
    embs: list[np.ndarray] = []
    labels: list[str] | None = []
    for i in range(0, len(images), batch):
        e, lab = fn(images[i : i + batch])
        embs.append(np.asarray(e))
        labels = None if lab is None or labels is None else labels + list(lab)
    return np.concatenate(embs), labels


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(Sa + Sb - 2 (Sa^1/2 Sb Sa^1/2)^1/2), via symmetric eigensolves
    (stable with the rank-deficient covariances a few hundred samples give)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    sa = np.cov(a, rowvar=False)
    sb = np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ sb @ root_a)
    tr_cross = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * tr_cross)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(sq, 0, None))


def _coverage(manifold: np.ndarray, probes: np.ndarray, k: int) -> float:
    """Share of ``probes`` within the k-NN ball of at least one point of ``manifold``."""
    own = _distances(manifold, manifold)
    radii = np.sort(own, axis=1)[:, min(k, len(manifold) - 1)]  # column 0 is the point itself
    return float((_distances(probes, manifold) <= radii[None, :]).any(1).mean())


def precision_recall(
    real: np.ndarray, fake: np.ndarray, k: int = PR_NEIGHBOURS
) -> tuple[float, float]:
    n = min(len(real), len(fake))
    real = np.asarray(real[:n], np.float64)
    fake = np.asarray(fake[:n], np.float64)
    return _coverage(real, fake, k), _coverage(fake, real, k)


def concept_share(labels: Sequence[str] | None, reference: Sequence[str] | None) -> float | None:
    if labels is None or reference is None or not labels:
        return None
    allowed = set(reference)
    return float(np.mean([lab in allowed for lab in labels]))


def concept_overlap(labels: Sequence[str] | None, reference: Sequence[str] | None) -> float | None:
    if labels is None or reference is None or not labels or not reference:
        return None
    mine, theirs = Counter(labels), Counter(reference)
    return float(sum(min(c / len(labels), theirs[lab] / len(reference)) for lab, c in mine.items()))


def set_metrics(
    fake: Features, ref: Features, *, prefix: str = "", pr: bool = True
) -> dict[str, Any]:
    """FID (and optionally precision/recall and concept share) of one set against ``ref``."""
    out: dict[str, Any] = {f"fid{prefix}": frechet_distance(fake[0], ref[0])}
    if pr:
        p, r = precision_recall(ref[0], fake[0])
        out[f"precision{prefix}"], out[f"recall{prefix}"] = p, r
    share = concept_share(fake[1], ref[1])
    if share is not None:
        out[f"concept_share{prefix}"] = share
        out[f"concept_overlap{prefix}"] = concept_overlap(fake[1], ref[1])
    return out


# ---------------------------------------------------------------------------------------------
# generated sets (torch)


def sample(
    generator: Generator, n: int, labels: torch.Tensor | None, seed: int, latent: int
) -> torch.Tensor:
    """``n`` images from ``generator`` (eval mode), latents from ``seed``; ``labels`` (a pool to
    draw from, e.g. the training labels) only for a conditional generator."""
    g = torch.Generator().manual_seed(seed)
    generator.eval()
    out = []
    with torch.no_grad():
        for i in range(0, n, 64):
            m = min(64, n - i)
            z = torch.randn(m, latent, generator=g)
            y = None
            if generator.num_classes and labels is not None:
                y = labels[torch.randint(0, len(labels), (m,), generator=g)]
            out.append(generator(z, y))
    return torch.cat(out) if out else torch.empty(0, 3, SIZE, SIZE)


def features_of(fn: FeatureFn, x: torch.Tensor) -> Features:
    return featurize(fn, tensor_to_images(x))


def quality_metrics(
    generator: Generator,
    train: torch.Tensor,
    heldout: torch.Tensor,
    features: FeatureFn,
    n: int,
    seed: int,
    *,
    train_labels: torch.Tensor | None = None,
    heldout_labels: torch.Tensor | None = None,
    label_names: Sequence[str] = (),
    tag_pools: Sequence[torch.Tensor] | None = None,
    train_tags: torch.Tensor | None = None,
) -> dict[str, Any]:
    """FID, precision/recall and concept share of generated images against the held-out ones,
    next to the same figures for uniform noise, per-pixel Gaussians fitted to the training
    images, and real training images (the floor); per tag for a conditional generator.
    ``train_labels`` are the generator's classes of the training images; ``tag_pools[k]`` the
    classes to draw from for tag ``k`` (default: class ``k``; a model with modes draws
    among the modes of the tag); ``train_tags`` the tag of each training image (default
    ``train_labels``)."""
    g = torch.Generator().manual_seed(seed + 7)
    latent = generator.latent
    fake = sample(generator, n, train_labels, seed + 11, latent)
    noise = torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1
    mean, std = train.mean(0), train.std(0)
    gauss = (mean + std * torch.randn(n, 3, SIZE, SIZE, generator=g)).clamp(-1, 1)
    pick = torch.randperm(len(train), generator=g)[:n]
    ref = features_of(features, heldout)
    fake_f = features_of(features, fake)
    per_tag = generator.num_classes and train_labels is not None and heldout_labels is not None
    # The per-tag figures need every training image's embedding; the floor then takes its
    # sample from those instead of embedding it a second time.
    train_f = features_of(features, train) if per_tag else None
    if train_f is None:
        real_train = features_of(features, train[pick])
    else:
        real_train = (train_f[0][pick.numpy()], _pick(train_f[1], pick.tolist()))
    out: dict[str, Any] = {
        **set_metrics(fake_f, ref),
        **set_metrics(features_of(features, noise), ref, prefix="_uniform_noise"),
        **set_metrics(features_of(features, gauss), ref, prefix="_pixel_gaussian", pr=False),
        **set_metrics(real_train, ref, prefix="_real_train"),
    }
    if per_tag:
        assert train_f is not None and train_labels is not None and heldout_labels is not None
        pools = list(tag_pools) if tag_pools is not None else [
            torch.full((1,), k, dtype=torch.long) for k in range(len(label_names))
        ]  # fmt: skip
        tags = train_labels if train_tags is None else train_tags
        real = (train_f[0], tags.numpy(), ref[0], heldout_labels.numpy())
        out["per_tag"] = _per_tag(generator, fake_f, real, features, label_names, pools, seed)
    return out


def _pick(labels: list[str] | None, idx: list[int]) -> list[str] | None:
    return None if labels is None else [labels[i] for i in idx]


def _per_tag(
    generator: Generator,
    fake: Features,
    real: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    features: FeatureFn,
    label_names: Sequence[str],
    pools: Sequence[torch.Tensor],
    seed: int,
) -> list[dict[str, Any]]:
    """Per tag, images generated with that tag against as many generated with random tags (the
    same model, labels drawn like the training set's), so FID's small-sample bias is the same
    on both sides:

    * ``fid_tag`` / ``fid_random_tags``: FID against the held-out real images of the tag (a
      few dozen: the honest figure, and a noisy one);
    * ``fid_tag_train`` / ``fid_random_tags_train``: against the tag's training images (ten
      times as many, so steadier);
    * ``tag_match`` / ``tag_match_random``: the share of the images that a logistic regression
      fitted on the real training images' embeddings assigns to the tag.

    ``real`` holds the training embeddings, their tags, the held-out embeddings and theirs."""
    from sklearn.linear_model import LogisticRegression

    train_e, train_t, held_e, held_t = real
    measured = [
        k for k in range(len(label_names))
        if (held_t == k).sum() >= MIN_TAG_HELDOUT and len(pools[k])
    ]  # fmt: skip
    if not measured:
        return []
    n = min(PER_TAG_SAMPLES, len(fake[0]))
    random_e = fake[0][:n]
    # Which tag a real icon of this embedding has: the yardstick for "drawn with the tag"
    # (none when the training images all have one tag).
    clf = None
    if len(np.unique(train_t)) > 1:
        clf = LogisticRegression(max_iter=2000).fit(train_e, train_t)

    def predict(e: np.ndarray) -> np.ndarray | None:
        return None if clf is None else clf.predict(e)

    def share(pred: np.ndarray | None, k: int) -> float | None:
        return None if pred is None else float((pred == k).mean())

    random_pred = predict(random_e)

    rows = []
    for k in measured:
        mask = held_t == k
        own = features_of(
            features, sample(generator, n, pools[k], seed + 101 + k, generator.latent)
        )[0]
        rows.append(
            {
                "tag": label_names[k],
                "heldout_images": int(mask.sum()),
                "train_images": int((train_t == k).sum()),
                "fid_tag": frechet_distance(own, held_e[mask]),
                "fid_random_tags": frechet_distance(random_e, held_e[mask]),
                "fid_tag_train": frechet_distance(own, train_e[train_t == k]),
                "fid_random_tags_train": frechet_distance(random_e, train_e[train_t == k]),
                "tag_match": share(predict(own), k),
                "tag_match_random": share(random_pred, k),
            }
        )
    return rows
