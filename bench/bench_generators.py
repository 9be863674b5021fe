"""Generator quality against training budget, side by side: RNN, n-gram, served mixture.

    python bench/bench_generators.py [--budgets 60,180,600] [--threads 2]
    python bench/bench_generators.py --through-api [--budget-s SECONDS]

Text, in process: for each budget, train the text generator on the first 90% of Tiny
Shakespeare (documents split at blank lines, as the API's `corpus` is) and score the last 10%,
the split published character-level results use, with the files the server loads: the RNN
alone, the modified Kneser-Ney 7-gram alone and the served gated mixture, in bits per
character of the original text (the end of each paragraph is scored once, as the document
separator that stands for its blank line).

``--through-api`` starts the suite (`atelier run`, SQLite, private Redis), sends the same 90% as
`corpus` to `POST /v1/generators/text:train` with the product's default budget (or
``--budget-s``), waits for the job, and scores the held-out 10% with the version it published.
It also prints the manifest's own-validation figures (served mixture against its n-gram).

Images: budget against FID, precision and recall of the GAN on the bundled icons, from
bench/bench_gan_budget.py (``--gan-budgets``; empty to skip).

Tiny Shakespeare is fetched with `python -m bench.datasets fetch-mirrors` (sha256-checked,
kept out of git).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.datasets import DatasetError, load_tiny_shakespeare
from bench.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]


def paragraphs(text: str) -> list[str]:
    return [t for t in text.split("\n\n") if t.strip()]


def held_out_bits(model_dir: Path, val_text: str) -> dict[str, float]:
    """Bits per character of the held-out text: served mixture, RNN alone, n-gram alone."""
    from workers.generation.mixture import MixtureGate
    from workers.generation.text import TextGenerator

    gen = TextGenerator(model_dir)
    docs = paragraphs(val_text)
    out = {"mixture": gen.score(docs)[0] / len(val_text)}
    served = gen.gate
    for key, weight in (("rnn", 1.0), ("ngram", 0.0)):
        gen.gate = MixtureGate.fixed(weight)
        if gen.ngram is not None or weight == 1.0:
            out[key] = gen.score(docs)[0] / len(val_text)
    gen.gate = served
    return out


def text_budget_curve(budgets: list[float], threads: int) -> None:
    from workers.training import rnn

    train_text, val_text = load_tiny_shakespeare()
    docs = paragraphs(train_text)
    print(f"\ntext: Tiny Shakespeare, {len(train_text):,} training / {len(val_text):,} held-out "
          f"characters, {threads} threads; bits per character of the held-out 10%")  # fmt: skip
    print(f"  {'budget_s':>8} {'steps':>6} {'epochs':>6} {'RNN':>7} {'7-gram':>7} "
          f"{'mixture':>7} {'mix/ngram':>9} {'own val: mix/ngram':>18}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_generators.") as tmp:
        for budget in budgets:
            m = rnn.train_text_generator(
                docs, Path(tmp), "tg", f"b{int(budget)}", epochs=None, budget_s=budget,
                threads=threads,
            )  # fmt: skip
            b = held_out_bits(Path(tmp) / "tg" / f"b{int(budget)}", val_text)
            own = m.metrics["mixture_val_bpc"] / m.metrics["ngram_val_bpc"]
            print(f"  {budget:>8.0f} {m.metrics['steps']:>6} {m.metrics['epochs']:>6} "
                  f"{b['rnn']:>7.3f} {b['ngram']:>7.3f} {b['mixture']:>7.3f} "
                  f"{b['mixture'] / b['ngram']:>9.3f} {own:>18.3f}", flush=True)  # fmt: skip


def through_api(budget_s: float | None, port: int, models_dir: Path) -> None:
    from bench.bench_reco_quality import Suite

    train_text, val_text = load_tiny_shakespeare()
    with tempfile.TemporaryDirectory(prefix="atelier-gen-bench-") as tmp:
        suite = Suite(Path(tmp), port, port + 1, models_dir)
        try:
            suite.wait_ready()
            key = suite.key("bench")
            body: dict[str, Any] = {"corpus": train_text}
            if budget_s is not None:
                body["budget_s"] = budget_s
            auth = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=suite.url, headers=auth, timeout=60) as c:
                t0 = time.monotonic()
                r = c.post("/v1/generators/text:train", json=body)
                r.raise_for_status()
                job_id = r.json()["job_id"]
                while True:
                    job = c.get(f"/v1/jobs/{job_id}").json()
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(5)
                wall = time.monotonic() - t0
            if job["status"] != "succeeded":
                raise RuntimeError(f"training job {job['status']}: {job.get('error')}")
            name, version = job["result"]["model"].split(":")
            m = job["result"]["metrics"]
            b = held_out_bits(Path(tmp) / "models" / name / version, val_text)
        finally:
            suite.stop()
    print(f"\ntext through the API: POST /v1/generators/text:train, budget {m['budget_s']} s, "
          f"{m['steps']} steps, {wall:.0f} s from request to published")  # fmt: skip
    print(f"  held-out last 10%, bits/char: RNN {b['rnn']:.3f}  7-gram {b['ngram']:.3f}  "
          f"served mixture {b['mixture']:.3f}")  # fmt: skip
    own = m["mixture_val_bpc"] / m["ngram_val_bpc"]
    print(f"  own validation split, bits/byte: RNN {m['val_bpc']:.3f}  n-gram "
          f"{m['ngram_val_bpc']:.3f}  served mixture {m['mixture_val_bpc']:.3f} "
          f"({(1 - own) * 100:.1f}% better than its n-gram)")  # fmt: skip
    print(json.dumps({k: m[k] for k in ("mixture_gate", "epochs", "train_time_s")}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budgets", default="60,180,600", help="text budgets, seconds")
    parser.add_argument("--gan-budgets", default="60,180,600", help="GAN budgets; empty: skip")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--through-api", action="store_true")
    parser.add_argument("--budget-s", type=float, default=None, help="API run; default: product")
    parser.add_argument("--port", type=int, default=18700)
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("ATELIER_MODELS_DIR", ROOT / "var" / "models")),
        help="where `make models-serving` built the taggers the suite needs to start",
    )
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs")
    try:
        if args.through_api:
            through_api(args.budget_s, args.port, args.models_dir)
            return 0
        text_budget_curve([float(b) for b in args.budgets.split(",") if b], args.threads)
    except DatasetError as exc:
        print(f"text: skipped ({exc})")
    if args.gan_budgets:
        from bench.bench_gan_budget import main as gan_budget_main

        gan_budget_main(["--budgets", *args.gan_budgets.split(","), "--threads", str(args.threads)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
