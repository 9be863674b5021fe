"""Image generator quality against training time: FID, precision and recall per budget.

    python bench/bench_gan_budget.py [--budgets 60 180 600] [--threads 1] [--unconditional]
                                     [--limit N] [--models var/models]

Trains the bundled recipe (OpenMoji icons, tags as in the bundled build unless
``--unconditional``) once per budget and prints budget -> FID / precision / recall / concept
share / steps / seconds, with the noise and real-image rows as the scale. Needs the image tagger
built (``make models``); the models are written to a temporary directory. The full run takes
the sum of the budgets plus about a minute of evaluation per budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model
from shared.inference.registry import ModelRegistry
from workers.tagging.image import ImageTagger
from workers.training.build.image_generator import TAGS, load_openmoji_tagged
from workers.training.gan import GANConfig, train_image_generator
from workers.training.gan_metrics import tagger_features


def budget_curve(
    budgets: list[float],
    *,
    models_dir: Path,
    threads: int = 1,
    conditional: bool = True,
    limit: int | None = None,
    config: GANConfig | None = None,
) -> list[dict[str, Any]]:
    """One training run per budget; the manifest metrics of each, with its budget."""
    images, tags = load_openmoji_tagged(limit=limit)
    names = [t for t in TAGS if t in tags]
    labels = [names.index(t) for t in tags] if conditional else None
    tagger = ModelRegistry(models_dir).get("image_tagger", ImageTagger)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench_gan_budget.") as tmp:
        for budget in budgets:
            t0 = time.perf_counter()
            manifest = train_image_generator(
                images, Path(tmp), "ig", f"b{budget:g}", budget_s=budget, labels=labels,
                label_names=names if conditional else None, config=config,
                features=tagger_features(tagger), embed_name=tagger.ref, threads=threads,
            )  # fmt: skip
            out.append({"budget_s": budget, "wall_s": time.perf_counter() - t0, **manifest.metrics})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=float, nargs="+", default=[60, 180, 600])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--unconditional", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="first N icons only (a quick check)")
    ap.add_argument("--models", type=Path, default=Path("var/models"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; load average {os.getloadavg()}")
    cond = not args.unconditional
    print(f"torch {torch.__version__}, {args.threads} thread(s); conditional: {cond}")
    rows = budget_curve(
        args.budgets, models_dir=args.models, threads=args.threads,
        conditional=cond, limit=args.limit,
    )  # fmt: skip
    print(
        f"\n{'budget_s':>8}  {'steps':>6}  {'train_s':>7}  {'wall_s':>6}  {'FID':>6}  "
        f"{'prec':>5}  {'recall':>6}  {'concept':>7}  {'best at':>7}"
    )
    for r in rows:
        print(
            f"{r['budget_s']:>8g}  {r['steps']:>6}  {r['train_time_s']:>7.0f}  "
            f"{r['wall_s']:>6.0f}  "
            f"{r['fid']:>6.3f}  {r['precision']:>5.2f}  {r['recall']:>6.2f}  "
            f"{r.get('concept_share', float('nan')):>7.2f}  {r['selected_step']:>7}"
        )
    last = rows[-1]
    print(
        f"scale: uniform noise FID {last['fid_uniform_noise']:.3f} "
        f"(concept {last.get('concept_share_uniform_noise', float('nan')):.2f}), "
        f"real training images FID {last['fid_real_train']:.3f} "
        f"(precision {last['precision_real_train']:.2f}, recall {last['recall_real_train']:.2f}, "
        f"concept {last.get('concept_share_real_train', float('nan')):.2f})"
    )
    for r in rows:
        for t in r.get("per_tag", []):
            print(
                f"  budget {r['budget_s']:g}  {t['tag']:>8}: FID with the tag / random tags: "
                f"held-out {t['fid_tag']:.3f} / {t['fid_random_tags']:.3f} "
                f"({t['heldout_images']} real), training {t['fid_tag_train']:.3f} / "
                f"{t['fid_random_tags_train']:.3f} ({t['train_images']} real); "
                f"tag match {t['tag_match']:.2f} / {t['tag_match_random']:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
