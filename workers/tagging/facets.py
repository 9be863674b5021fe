"""Vocabulary facets at tagging time: which entries an item gets, for text and for images.

An entry without a facet, or in a ``multi`` facet, is tagged when its calibrated probability
(``TextEmbedder.probabilities``: a sigmoid of the cosine to its mean prototype) reaches its own
threshold or the model's default (0.5), exactly as before facets existed. A ``single`` facet
gives every item exactly one entry, its best, scored by a softmax over the facet's entries of
the same calibrated logit (``slope * cosine``), so the score is the probability that this entry,
rather than another of the facet, is the right one; with ``allow_none`` it answers nothing when
that probability is under ``none_below`` (default 0.5).

Zero-shot single facets use more than the bare mean prototype; each step was measured on AG
News through the API (bench/bench_tag_facets.py, docs/facets.md):

- every phrasing counts by itself: an item's score for an entry is its best cosine over the
  entry's phrasings (name, "a text about <name>", each description), not the cosine to their
  mean, which a bare name drags away from the descriptions;
- self-training on the tenant's own texts: a random sample of ``CORPUS_SAMPLE`` stored text
  embeddings are assigned to entries, the more confident half of each entry's items (by margin
  over the runner-up) is averaged, and the prototype moves to that centroid plus
  ``PRIOR_WEIGHT`` x the descriptions' prototype; twice.
- centring embeddings on the tenant's mean was measured too and did not help: it is not used.

What each step gained is in docs/perf.md.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db.models import Embedding
from shared.db.vocabulary import vocabulary_rows
from workers.tagging.text import VocabularyTerm, _normalise

SINGLE = "single"
MULTI = "multi"
DEFAULT_NONE_BELOW = 0.5
# Self-training: how much of the tenant's text it reads, and when it starts to pay.
CORPUS_SAMPLE = 2000
MIN_CORPUS = 100
SELF_TRAIN_ROUNDS = 2
CONFIDENT_SHARE = 0.5
PRIOR_WEIGHT = 0.5
# Adapted prototypes are reused for a minute per worker: a batch job must not re-read 2,000
# vectors, and a minute-old corpus sample tags as well as a fresh one.
ADAPTED_TTL_S = 60.0
ADAPTED_CACHE_SIZE = 64

IMAGE_LABEL_TEMPLATE = "a photo of {}"
IMAGE_VOCAB_TOP_LABELS = 5
IMAGE_VOCAB_SLOPE = 20.0
IMAGE_VOCAB_MIDPOINT = 0.4

Tags = list[tuple[str, float]]


@dataclass(frozen=True)
class Facet:
    name: str
    mode: str = MULTI
    allow_none: bool = False
    none_below: float | None = None


@dataclass
class FacetedVocabulary:
    """A tenant's vocabulary entries (for the embedder) with their facet and threshold."""

    entries: list[VocabularyTerm]
    facet_of: list[str | None] = field(default_factory=list)
    thresholds: list[float | None] = field(default_factory=list)
    facets: dict[str, Facet] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def single_groups(self) -> dict[str, list[int]]:
        """Entry indices of each single facet (facets with no entry are left out)."""
        groups: dict[str, list[int]] = {}
        for j, name in enumerate(self.facet_of):
            if name is not None and self.facets[name].mode == SINGLE:
                groups.setdefault(name, []).append(j)
        return groups

    def key(self) -> tuple[Any, ...]:
        return (
            tuple(e.key() for e in self.entries),
            tuple(self.facet_of),
            tuple(sorted(self.facets.items())),
        )


def load_faceted_vocabulary(session: Session, tenant_id: str) -> FacetedVocabulary:
    facet_rows, rows = vocabulary_rows(session, tenant_id)
    facets = {f.name: Facet(f.name, f.mode, bool(f.allow_none), f.none_below) for f in facet_rows}
    return FacetedVocabulary(
        entries=[
            VocabularyTerm(name=r.name, descriptions=list(r.descriptions or [])) for r in rows
        ],
        # A facet deleted under its entries leaves them independent, never untagged.
        facet_of=[r.facet if r.facet in facets else None for r in rows],
        thresholds=[r.threshold for r in rows],
        facets=facets,
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def facet_tags(
    vocab: FacetedVocabulary,
    probs: np.ndarray,
    single_logits: np.ndarray,
    *,
    default_threshold: float,
) -> list[Tags]:
    """Per item (rows), the entries it gets, best first (module doc for the semantics).

    ``probs`` (n, entries) are the independent calibrated probabilities, read for entries
    without a facet and in multi facets; ``single_logits`` (n, entries) are read only for
    single-facet entries, one softmax per facet.
    """
    names = [e.name for e in vocab.entries]
    independent = [
        j for j, f in enumerate(vocab.facet_of) if f is None or vocab.facets[f].mode != SINGLE
    ]
    cuts = np.array(
        [default_threshold if vocab.thresholds[j] is None else vocab.thresholds[j]
         for j in independent],
        dtype=np.float64,
    )  # fmt: skip
    groups = vocab.single_groups()
    out: list[Tags] = []
    for i in range(probs.shape[0]):
        tags: Tags = [
            (names[j], float(probs[i, j]))
            for j, cut in zip(independent, cuts, strict=True)
            if probs[i, j] >= cut
        ]
        for facet_name, idx in groups.items():
            facet = vocab.facets[facet_name]
            p = softmax(single_logits[i, idx].astype(np.float64))
            best = int(p.argmax())
            floor = DEFAULT_NONE_BELOW if facet.none_below is None else facet.none_below
            if facet.allow_none and p[best] < floor:
                continue
            tags.append((names[idx[best]], float(p[best])))
        tags.sort(key=lambda t: -t[1])
        out.append(tags)
    return out


# --- text ---------------------------------------------------------------------------------------


def self_train(
    phrasings: Sequence[np.ndarray], corpus: np.ndarray, *, rounds: int = SELF_TRAIN_ROUNDS
) -> np.ndarray:
    """Prototypes (rows, L2-normalised) of competing entries adapted to an unlabelled corpus.

    ``phrasings[j]`` holds entry j's phrasing embeddings. The first assignment uses each
    entry's best phrasing; each round moves a prototype to the centroid of the more confident
    half of its items, pulled back towards its descriptions by ``PRIOR_WEIGHT`` so that an
    entry the corpus barely holds keeps its meaning.
    """
    prior = _normalise(np.stack([p.mean(axis=0) for p in phrasings]))
    sims = np.stack([(corpus @ p.T).max(axis=1) for p in phrasings], axis=1)
    protos = prior
    for _ in range(rounds):
        pred = sims.argmax(axis=1)
        top2 = np.sort(sims, axis=1)[:, -2:] if sims.shape[1] > 1 else np.zeros((len(sims), 2))
        margin = top2[:, -1] - top2[:, 0]
        centroids = np.zeros_like(prior)
        for j in range(len(phrasings)):
            mine = np.flatnonzero(pred == j)
            if len(mine):
                keep = mine[
                    np.argsort(-margin[mine])[: max(1, int(np.ceil(len(mine) * CONFIDENT_SHARE)))]
                ]
                centroids[j] = _normalise(corpus[keep].mean(axis=0))
        protos = _normalise(centroids + PRIOR_WEIGHT * prior)
        sims = corpus @ protos.T
    return protos


class _AdaptedCache:
    """(tenant, model, vocabulary) -> per single facet, its adapted prototypes or None."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[Any, ...], tuple[float, dict[str, np.ndarray | None]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> dict[str, np.ndarray | None] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or time.monotonic() - hit[0] > ADAPTED_TTL_S:
                return None
            return hit[1]

    def put(self, key: tuple[Any, ...], value: dict[str, np.ndarray | None]) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), value)
            while len(self._items) > ADAPTED_CACHE_SIZE:
                self._items.popitem(last=False)


_ADAPTED = _AdaptedCache()


def tenant_corpus(session: Session, tenant_id: str, model: str) -> np.ndarray:
    """A random sample of the tenant's text embeddings of this model (``CORPUS_SAMPLE``).

    Random, not the most recent: a burst of one topic (a day of sports uploads) would
    otherwise pull every prototype towards it. On AG News the most recent 2,000 of a pool
    uploaded topic by topic made self-training lose a point to the bare argmax; a sample gains
    four. The scan is one indexed query per minute per vocabulary (the result is cached).
    """
    blobs = session.scalars(
        select(Embedding.vector)
        .where(
            Embedding.tenant_id == tenant_id, Embedding.space == "text", Embedding.model == model
        )
        .order_by(func.random())
        .limit(CORPUS_SAMPLE)
    ).all()
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.frombuffer(b, dtype="<f4") for b in blobs])


def text_vocabulary_tags(
    embedder: Any,
    session: Session | None,
    tenant_id: str,
    docs: np.ndarray,
    vocab: FacetedVocabulary,
) -> list[Tags]:
    """Vocabulary tags of texts (``docs``: their document embeddings, rows)."""
    if not vocab:
        return [[] for _ in range(len(docs))]
    protos = embedder.prototypes(vocab.entries)
    sims = embedder.similarities(docs, protos)
    probs = embedder.probabilities(sims)
    logits = np.zeros_like(sims)
    groups = vocab.single_groups()
    if groups:
        adapted = _ADAPTED.get((tenant_id, embedder.ref, vocab.key()))
        phr = _phrasing_embeddings(embedder, vocab.entries)
        if adapted is None:
            corpus = tenant_corpus(session, tenant_id, embedder.ref) if session else docs[:0]
            # The batch being tagged is part of the tenant's content too.
            corpus = np.concatenate([corpus, docs]) if len(corpus) else np.asarray(docs)
            adapted = {
                name: self_train([phr[j] for j in idx], corpus)
                if len(corpus) >= MIN_CORPUS
                else None
                for name, idx in groups.items()
            }
            _ADAPTED.put((tenant_id, embedder.ref, vocab.key()), adapted)
        for name, idx in groups.items():
            matrix = adapted.get(name)
            cos = (
                docs @ matrix.T
                if matrix is not None
                else np.stack([(docs @ phr[j].T).max(axis=1) for j in idx], axis=1)
            )
            logits[:, idx] = embedder.calibration_slope * cos
    return facet_tags(vocab, probs, logits, default_threshold=embedder.default_threshold)


_PHRASINGS: OrderedDict[tuple[Any, ...], list[np.ndarray]] = OrderedDict()
_PHRASINGS_LOCK = threading.Lock()


def _phrasing_embeddings(embedder: Any, entries: Sequence[VocabularyTerm]) -> list[np.ndarray]:
    key = (embedder.ref, tuple(e.key() for e in entries))
    with _PHRASINGS_LOCK:
        if key in _PHRASINGS:
            return _PHRASINGS[key]
    texts = [e.phrasings() for e in entries]
    emb = embedder.embed([t for ts in texts for t in ts])
    out, start = [], 0
    for ts in texts:
        out.append(emb[start : start + len(ts)])
        start += len(ts)
    with _PHRASINGS_LOCK:
        _PHRASINGS[key] = out
        while len(_PHRASINGS) > ADAPTED_CACHE_SIZE:
            _PHRASINGS.popitem(last=False)
    return out


# --- images -------------------------------------------------------------------------------------


def image_vocabulary_tags(
    embedder: Any, labels_per_image: list[Tags], vocab: FacetedVocabulary
) -> list[Tags]:
    """Vocabulary tags for images, through their labels: zero-shot on "a photo of <label>".

    Each of an image's top labels is embedded with the text model and compared with the
    vocabulary prototypes; an entry scores max over labels of (label score x match
    probability). The text model's own calibration was fitted on sentences, and on two-word
    label phrases it fires on nearly everything (e.g. "carnivore" -> a food tag at 0.99), so the
    match probability here uses its own sigmoid, set on scikit-image photos against a six-topic
    vocabulary: a right match sits at cosine 0.45-0.7, a wrong one at 0.05-0.37. A single
    facet's score is its best entry's share of the facet's summed scores.
    """
    if not vocab:
        return [[] for _ in labels_per_image]
    protos = embedder.prototypes(vocab.entries)
    top = [labels[:IMAGE_VOCAB_TOP_LABELS] for labels in labels_per_image]
    unique = sorted({name for labels in top for name, _ in labels})
    if not unique:
        return [[] for _ in labels_per_image]
    emb = _label_embeddings(embedder, unique)
    z = IMAGE_VOCAB_SLOPE * (emb @ protos.matrix.T - IMAGE_VOCAB_MIDPOINT)
    match = 1.0 / (1.0 + np.exp(-z))
    row = {name: i for i, name in enumerate(unique)}
    scores = np.zeros((len(top), len(vocab.entries)), dtype=np.float64)
    for i, labels in enumerate(top):
        if labels:
            idx = np.array([row[name] for name, _ in labels])
            weights = np.array([score for _, score in labels], dtype=np.float64)
            scores[i] = (weights[:, None] * match[idx]).max(axis=0)
    # softmax(log s) is s / sum(s): the share of the facet's evidence.
    logits = np.log(np.maximum(scores, 1e-12))
    tags = facet_tags(vocab, scores, logits, default_threshold=embedder.default_threshold)
    # An image without labels has no evidence for any entry, single facets included.
    return [t if labels else [] for t, labels in zip(tags, top, strict=True)]


_LABEL_CACHE: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_LABEL_CACHE_SIZE = 20_000


def _label_embeddings(embedder: Any, labels: list[str]) -> np.ndarray:
    """Embeddings of "a photo of <label>", cached per text model version.

    Image labels come from a fixed set of a few thousand names, so after warm-up an image costs
    no text-model run.
    """
    missing = [name for name in labels if (embedder.ref, name) not in _LABEL_CACHE]
    if missing:
        vecs = embedder.embed([IMAGE_LABEL_TEMPLATE.format(name) for name in missing])
        for name, vec in zip(missing, vecs, strict=True):
            _LABEL_CACHE[(embedder.ref, name)] = vec
        while len(_LABEL_CACHE) > _LABEL_CACHE_SIZE:
            _LABEL_CACHE.popitem(last=False)
    return np.stack([_LABEL_CACHE[(embedder.ref, name)] for name in labels])
