"""Text embedder throughput, side by side on one machine: raw ORT, our embed(), torch eager.

    python bench/bench_text_tagger.py [--repeats 5] [--texts 256] [--batch-size 32] [--threads 1]

Figures are texts/s, the median of ``--repeats`` runs over the same ``--texts`` texts. "ours" is
``TextEmbedder.embed`` on raw strings (tokenise + plan runs + pad + run), the others start from
pre-tokenised, padded batches, so ours/raw (planned runs) shows what the Python side costs.
"planned runs" are the runs the embedder makes (``plan_batches``: length-sorted, cut where
padding would cost more than another model run); "sorted batches" are plain fixed batches of
the sorted texts and "arrival order" fixed batches unsorted, to show what each step buys.
A last line fits ``plan_batches``' cost model on this machine: one run of ``b`` texts of ``L``
tokens takes about ``per_run + per_token * b * L``; the planner's ``RUN_COST_TOKENS`` is
``per_run / per_token``. The corpus is sentences, sentence pairs and whole paragraphs from
scikit-learn's bundled dataset descriptions (no downloads), shuffled with a fixed seed.
"""

from __future__ import annotations

import argparse
import itertools
import os

# Before onnxruntime/tokenizers/torch load: one thread each, as in a worker process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model
from shared.inference.registry import ModelRegistry
from shared.inference.session import create_session
from workers.tagging.text import TextEmbedder
from workers.tagging.text_batching import (
    MAX_BATCH_TOKENS,
    RUN_COST_TOKENS,
    pad_batch,
    padded_runs,
)
from workers.training.build import text_embedder as builder
from workers.training.build.text_embedder_model import load_torch_model


def corpus(n: int, seed: int = 0) -> list[str]:
    """Mixed-length English: single sentences, pairs, and paragraphs (capped by the model)."""
    import sklearn.datasets

    descr = Path(sklearn.datasets.__file__).parent / "descr"
    paragraphs: list[str] = []
    for path in sorted(descr.glob("*.rst")):
        for block in re.split(r"\n\s*\n", path.read_text()):
            text = " ".join(block.split())
            # Keep prose; drop tables, headings and directive lines.
            if len(text.split()) >= 6 and not re.match(r"^[=\-:.|*+]|^\.\.", text):
                paragraphs.append(text)
    sentences = [s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+", p) if len(s) > 20]
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(sentences)]
    pool = sentences + pairs[::3] + paragraphs
    rng = random.Random(seed)
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(n)]


def batches(ids: list[list[int]], size: int, *, sort: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if sort else list(range(len(ids)))
    return [pad_batch([ids[i] for i in order[s : s + size]]) for s in range(0, len(ids), size)]


def rates(
    paths: dict[str, Callable[[], object]], n: int, repeats: int
) -> dict[str, tuple[float, float, float]]:
    """(median, min, max) texts/s per path; paths take turns within each repeat.

    Round-robin rather than all repeats of one path then the next, so that load from other
    processes on a shared machine falls on every path alike and the ratios stay meaningful.
    """
    for fn in paths.values():
        fn()  # warm-up: allocators, ORT's first-run shape work, torch's kernels
    seen: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            seen[name].append(n / (time.perf_counter() - t0))
    return {k: (statistics.median(v), min(v), max(v)) for k, v in seen.items()}


def cost_model(
    session: ort.InferenceSession, repeats: int
) -> tuple[float, float, dict[int, float]]:
    """(seconds per run, seconds per padded token) by least squares over runs of 1-32 texts of
    4-64 tokens and at most 512 tokens, where the cost is close to linear; and the seconds per
    token of runs of 64 x 16, 128 x 16 (1,024 and 2,048 tokens), where activations outgrow the
    caches and a token costs more: the planner's ``MAX_BATCH_TOKENS``. Medians of
    ``repeats``."""

    def timed(b: int, n: int) -> float:
        feed = {
            "input_ids": np.full((b, n), 2000, np.int64),
            "attention_mask": np.ones((b, n), np.int64),
        }
        session.run(["sentence_embedding"], feed)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.run(["sentence_embedding"], feed)
            runs.append(time.perf_counter() - t0)
        return statistics.median(runs)

    shapes = [(b, n) for b in (1, 2, 4, 8, 16, 32) for n in (4, 8, 16, 32, 64) if b * n <= 512]
    times = [timed(b, n) for b, n in shapes]
    design = np.array([[1.0, b * n] for b, n in shapes])
    (per_run, per_token), *_ = np.linalg.lstsq(design, np.array(times), rcond=None)
    large = {b * 16: timed(b, 16) / (b * 16) for b in (64, 128)}
    return float(per_run), float(per_token), large


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--models-dir", default=os.environ.get("ATELIER_MODELS_DIR", "var/models"), type=Path
    )
    args = parser.parse_args(argv)

    fp32_dir = builder.build(args.models_dir, log=lambda _msg: None)
    registry = ModelRegistry(args.models_dir, threads=args.threads)
    ours = registry.get(builder.NAME, TextEmbedder)
    int8 = registry.get_or_none(builder.INT8_NAME, TextEmbedder)
    session = create_session(fp32_dir / "model.onnx", threads=args.threads)

    texts = corpus(args.texts)
    ids = ours.tokenize(texts)
    lengths = np.array([len(x) for x in ids])
    planned_batches = [(i, m) for _, i, m in padded_runs(ids, max_batch=args.batch_size)]
    sorted_batches = batches(ids, args.batch_size, sort=True)
    arrival_batches = batches(ids, args.batch_size, sort=False)

    def raw(feeds: list[tuple[np.ndarray, np.ndarray]]) -> Callable[[], None]:
        def run() -> None:
            for i, m in feeds:
                session.run(["sentence_embedding"], {"input_ids": i, "attention_mask": m})

        return run

    n, r, bs = len(texts), args.repeats, args.batch_size
    paths: dict[str, Callable[[], object]] = {
        "raw ORT, planned runs": raw(planned_batches),
        "raw ORT, sorted batches": raw(sorted_batches),
        "raw ORT, arrival order": raw(arrival_batches),
        "ours: embed(strings)": lambda: ours.embed(texts, batch_size=bs),
    }
    if int8 is not None:
        paths["ours int8: embed(strings)"] = lambda: int8.embed(texts, batch_size=bs)
    torch_version = "not installed"
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch_version = torch.__version__
        torch.set_num_threads(args.threads)
        model = load_torch_model()

        def eager(feeds: list[tuple[np.ndarray, np.ndarray]]) -> Callable[[], None]:
            tensors = [(torch.from_numpy(i), torch.from_numpy(m)) for i, m in feeds]

            def run() -> None:
                with torch.inference_mode():
                    for i, m in tensors:
                        model(i, m)

            return run

        paths["torch eager, planned runs"] = eager(planned_batches)
        paths["torch eager, sorted batches"] = eager(sorted_batches)
    results = rates(paths, n, r)
    per_run, per_token, per_token_large = cost_model(session, r)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores visible, load avg {load:.1f})")
    print(
        f"versions: python {platform.python_version()}, onnxruntime {ort.__version__}, "
        f"torch {torch_version}, tokenizers {tokenizers.__version__}, numpy {np.__version__}"
    )
    print(
        f"model: {ours.ref}; threads={args.threads}, batch={bs}, repeats={r}, texts={n} "
        f"(tokens/text: median {int(np.median(lengths))}, mean {lengths.mean():.0f}, "
        f"max {lengths.max()})"
    )
    print(f"{'path':<30}{'texts/s (median)':>18}{'min':>9}{'max':>9}")
    for name, (med, lo, hi) in results.items():
        print(f"{name:<30}{med:>18.1f}{lo:>9.1f}{hi:>9.1f}")
    raw_planned = results["raw ORT, planned runs"][0]
    raw_sorted = results["raw ORT, sorted batches"][0]
    print(f"ours / raw ORT (planned runs):  {results['ours: embed(strings)'][0] / raw_planned:.2f}")
    print(f"raw ORT planned / sorted:       {raw_planned / raw_sorted:.2f}")
    print(
        f"raw ORT sorted / arrival order: {raw_sorted / results['raw ORT, arrival order'][0]:.2f}"
    )
    if "torch eager, sorted batches" in results:
        print(
            "ORT / torch eager:              "
            f"planned runs {raw_planned / results['torch eager, planned runs'][0]:.2f}, "
            f"sorted batches {raw_sorted / results['torch eager, sorted batches'][0]:.2f}"
        )
    print(
        f"cost model (raw ORT): {per_run * 1e3:.2f} ms per run + {per_token * 1e3:.3f} ms per "
        f"padded token = {per_run / per_token:.1f} tokens per run (RUN_COST_TOKENS = "
        f"{RUN_COST_TOKENS}); ms per token in runs of "
        + ", ".join(f"{n} tokens: {t * 1e3:.3f}" for n, t in per_token_large.items())
        + f" (MAX_BATCH_TOKENS = {MAX_BATCH_TOKENS})"
    )
    if "ours int8: embed(strings)" in results:
        print(
            "int8 / fp32 (ours):             "
            f"{results['ours int8: embed(strings)'][0] / results['ours: embed(strings)'][0]:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
