"""Per-tag FID of the bundled image generator under several sampling seeds: how much of a
per-tag difference is the metric's own sampling noise.

    python bench/gan_tag_seeds.py [--models var/models] [--seeds 4] [--n 256] [--candidates 1,16]

For each seed, ``n`` images per tag and ``n`` with tags drawn as for a request without one,
through the serving class at the API's default truncation, scored on the image tagger's
embedding against the tag's held-out icons and against its training icons (the split the
build used). Prints, per tag, the mean and spread over seeds of both figures and on how many
seeds the tag's images are nearer their icons than the random-tag images.

A model published with its critic serves a tagged image as one of ``k`` drawings resampled by
the critic; ``--candidates`` scores each ``k`` given (1: the generator alone, the tag's modes
and no critic) in the same run, with the time it took, and prints how often the critic names
the tag of the held-out icons.

``--unconditioned DIR`` also scores a model version trained on the same icons without tags
(``bench/gan_unconditioned.py`` builds one): its images, drawn with the same seeds, against
each tag's icons, beside the tagged and random-tag figures.

``--real`` scores real icons the same way, the most a tag can win by with a perfect generator:
per tag, up to ``n`` of its training icons against as many training icons of any tag,
against its held-out icons; and half of its training icons against as many of any tag (not
the other half), against the other half. Subsamples differ per seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gan_grid import served_images
from shared.inference.registry import ModelRegistry
from workers.generation.image import ImageGenerator
from workers.tagging.image import ImageTagger
from workers.training.build.image_generator import NAME, VERSION, load_openmoji_tagged
from workers.training.gan_metrics import featurize, frechet_distance, tagger_features
from workers.training.gan_recipe import GANConfig, heldout_split


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("var/models"))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--candidates", default="", help="comma-separated k (default: the model's)")
    ap.add_argument("--unconditioned", type=Path, help="an untagged model version's directory")
    ap.add_argument("--real", action="store_true", help="also score real icons (the ceiling)")
    args = ap.parse_args(argv)

    gen = ImageGenerator(args.models / NAME / VERSION)
    if not gen.tags:
        print(f"{gen.ref} was trained without tags")
        return 1
    features = tagger_features(ModelRegistry(args.models).get("image_tagger", ImageTagger))
    images, tags = load_openmoji_tagged()
    heldout, train = (idx.tolist() for idx in heldout_split(len(images), GANConfig()))

    def embed(ims: list) -> np.ndarray:  # type: ignore[type-arg]
        return featurize(features, ims)[0]

    icons = embed(images)  # every icon once: the tags' references, and --real

    def real(idx: list[int], tag: str) -> np.ndarray:
        return icons[[i for i in idx if tags[i] == tag]]

    refs = {t: (real(heldout, t), real(train, t)) for t in gen.tags}

    def draw(seed: int, tag: str | None) -> np.ndarray:
        return embed(served_images(gen, args.n, seed, tag))

    if gen.has_critic:
        named = gen.critic_tags([images[i] for i in heldout])
        share = np.mean([a == tags[i] for a, i in zip(named, heldout, strict=True)])
        print(f"critic: names the tag of {share:.1%} of the {len(heldout)} held-out icons")
    if args.real:
        print(f"\nreal icons: the tag's own / any tag's, up to {args.n} a side")
        table(real_icons(icons, tags, heldout, train, gen.tags, args), args.seeds, args.n)
    ks = [int(k) for k in args.candidates.split(",") if k] or [gen.candidates]
    random_tags = [draw(1_000 * s, None) for s in range(args.seeds)]
    base = None
    if args.unconditioned:
        base = unconditioned(ImageGenerator(args.unconditioned), refs, embed, args)
        print(f"unconditioned: {args.unconditioned}, trained without tags")
    for k in ks:
        gen.candidates = k
        t0 = time.perf_counter()
        # rows[tag]: per seed, FID held-out with the tag, with random tags, then on train.
        rows: dict[str, list[tuple[float, ...]]] = {t: [] for t in gen.tags}
        for s in range(args.seeds):
            for t in gen.tags:
                own = draw(1_000 * s, t)
                held, tr = refs[t]
                rows[t].append(tuple(frechet_distance(x, ref) for ref in (held, tr)
                                     for x in (own, random_tags[s])))  # fmt: skip
        seconds = time.perf_counter() - t0
        count = args.seeds * len(gen.tags) * args.n
        print(f"\n{gen.ref}, tagged images resampled from {k} drawings each "
              f"({seconds:.0f}s for {count} tagged images, embedding included)")  # fmt: skip
        table(rows, args.seeds, args.n, base)
    return 0


def unconditioned(
    base: ImageGenerator,
    refs: dict[str, tuple[np.ndarray, np.ndarray]],
    embed: Callable[[list], np.ndarray],  # type: ignore[type-arg]
    args: argparse.Namespace,
) -> dict[str, np.ndarray]:
    """Per tag, ``[seeds, 2]``: the untagged model's FID against the tag's held-out and
    training icons, its images drawn with the same seeds as the tagged model's."""
    if base.tags:
        raise SystemExit(f"{base.ref} was trained with tags; --unconditioned takes one without")
    drawn = [embed(served_images(base, args.n, 1_000 * s, None)) for s in range(args.seeds)]
    return {
        t: np.array([[frechet_distance(x, ref) for ref in pair] for x in drawn])
        for t, pair in refs.items()
    }


def real_icons(
    icons: np.ndarray,
    tags: Sequence[str],
    heldout: list[int],
    train: list[int],
    names: Sequence[str],
    args: argparse.Namespace,
) -> dict[str, list[tuple[float, ...]]]:
    """Rows for :func:`table` from real icons (``--real``; ``icons``: every icon's embedding,
    by index): per tag and seed, FID of the tag's training icons / random training icons
    against its held-out icons, then of half its training icons / random ones outside the
    other half against that other half."""

    def fid(a: np.ndarray, b: np.ndarray) -> float:
        return frechet_distance(icons[a], icons[b])

    pool = np.array(train)
    rows: dict[str, list[tuple[float, ...]]] = {t: [] for t in names}
    for t in names:
        own = pool[[tags[i] == t for i in train]]
        held = np.array([i for i in heldout if tags[i] == t])
        n = min(args.n, len(own))
        for s in range(args.seeds):
            rng = np.random.default_rng(s)
            perm = rng.permutation(own)
            ref, half = perm[: len(own) // 2], perm[len(own) // 2 :][: args.n]
            others = np.setdiff1d(pool, ref)
            rows[t].append((
                fid(rng.choice(own, n, replace=False), held),
                fid(rng.choice(pool, n, replace=False), held),
                fid(half, ref),
                fid(rng.choice(others, len(half), replace=False), ref),
            ))  # fmt: skip
    return rows


def table(
    rows: dict[str, list[tuple[float, ...]]],
    seeds: int,
    n: int,
    base: dict[str, np.ndarray] | None = None,
) -> None:
    print(f"{seeds} seeds x {n} images; FID with the tag / random tags,")
    print("mean±sd over seeds, and on how many seeds the tag's images are nearer")
    if base is not None:
        print("then the untagged model's FID and on how many seeds the tag beats it")
    print(f"{'tag':8} {'held-out icons':^32} {'training icons':^32}")
    for t, r in rows.items():
        a = np.array(r)
        cells = []
        for col, (with_tag, random_tag) in enumerate((a[:, 0:2].T, a[:, 2:4].T)):
            wins = int((with_tag < random_tag).sum())
            mine = f"{with_tag.mean():.3f}±{with_tag.std():.3f}"
            theirs = f"{random_tag.mean():.3f}±{random_tag.std():.3f}"
            cell = f"{mine} / {theirs} {wins}/{len(a)}"
            if base is not None:
                untagged = base[t][:, col]
                cell += f" | {untagged.mean():.3f} {int((with_tag < untagged).sum())}/{len(a)}"
            cells.append(cell)
        print(f"{t:8} {cells[0]:^32} {cells[1]:^32}")


if __name__ == "__main__":
    raise SystemExit(main())
