"""Text embeddings, keyphrases and zero-shot vocabulary tags (all-MiniLM-L6-v2 on onnxruntime).

Long texts: :meth:`TextEmbedder.embed` keeps the first ``MAX_TOKENS`` (256) tokens, like
sentence-transformers, so a sentence or query costs one window. Documents (``tag_text``,
``tag_texts``, ``keyphrases``) go through :meth:`TextEmbedder.embed_documents`, which splits the
text into 256-token windows overlapping by ``CHUNK_STRIDE`` tokens, embeds every window in the same
length-sorted batches and averages them weighted by token count: CMS articles are often longer
than 256 tokens (~190 words) and their topic is not always in the first paragraph. The cost is
linear in length and capped at ``MAX_DOCUMENT_CHUNKS`` windows (~1,500 words); the rest of a very
long text is ignored.

Zero-shot scores: each vocabulary entry's prototype is the normalised mean of the embeddings of
its phrasings (the name, "a text about <name>", and every description). Cosine similarity to the
prototype is mapped to a probability with ``sigmoid(slope * cosine + intercept)``, fitted by the
model builder on a built-in labelled set of 70 short texts (sentences and name-heavy headlines)
x 10 topics, and stored in the model's manifest (``extra.zero_shot_calibration``). The
probability is per tag (multi-label), so the default threshold of 0.5 means "more likely relevant
than not"; it favours precision (0.81 precision, 0.69 recall on that set), and callers that want
more tags pass a lower one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shared.inference.base import InferenceModel
from shared.model_versions import ModelError

# Candidate extraction lives in keyphrases.py; re-exported for callers that import it from here.
from workers.tagging.keyphrases import STOPWORDS, keyphrase_candidates  # noqa: F401
from workers.tagging.text_batching import load_tokenizer, pad_batch, padded_runs

EMBEDDING_DIM = 384
MAX_DOCUMENT_CHUNKS = 8
DEFAULT_THRESHOLD = 0.5
MAX_KEYPHRASE_CANDIDATES = 256
# Two candidates this close in MiniLM space say the same thing ("merger deal"/"merger
# agreement"); MMR never picks the second.
NEAR_DUPLICATE_COSINE = 0.9
PROTOTYPE_CACHE_SIZE = 32
CALIBRATION_KEY = "zero_shot_calibration"
# Used only if a manifest lacks a fitted calibration (hand-built model dirs); roughly what the
# builder fits for MiniLM-L6 on its built-in set.
FALLBACK_CALIBRATION = {"slope": 25.0, "intercept": -4.8}


def _normalise(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(
        np.float32
    )
    return unit


@dataclass
class VocabularyTerm:
    """A tag a tenant wants; one-sentence descriptions make zero-shot tagging markedly better."""

    name: str
    descriptions: list[str] = field(default_factory=list)

    def phrasings(self) -> list[str]:
        return [self.name, f"a text about {self.name}", *self.descriptions]

    def key(self) -> tuple[str, tuple[str, ...]]:
        return self.name, tuple(self.descriptions)


@dataclass(frozen=True)
class VocabularyPrototypes:
    """A vocabulary embedded once; pass it to :meth:`TextEmbedder.zero_shot` for every document."""

    names: tuple[str, ...]
    matrix: np.ndarray  # (len(names), EMBEDDING_DIM), rows L2-normalised
    model_ref: str


@dataclass
class TextTags:
    embedding: np.ndarray  # (EMBEDDING_DIM,) float32, L2-normalised
    keyphrases: list[tuple[str, float]]
    vocabulary_tags: list[tuple[str, float]]


def mmr(
    doc: np.ndarray,
    candidates: np.ndarray,
    *,
    top_n: int,
    diversity: float,
    near_duplicate: float = NEAR_DUPLICATE_COSINE,
) -> list[tuple[int, float]]:
    """Maximal marginal relevance: indices and their similarity to ``doc``, best first.

    ``diversity`` 0 ranks by similarity only; 1 picks each next phrase as unlike the chosen ones
    as possible. A candidate whose cosine to a chosen one reaches ``near_duplicate`` is never
    picked: MMR only discounts it, and with few candidates it would still come back.
    """
    if len(candidates) == 0 or top_n <= 0:
        return []
    relevance = candidates @ doc
    pairwise = candidates @ candidates.T
    chosen = [int(relevance.argmax())]
    remaining = set(range(len(candidates))) - set(chosen)
    while remaining and len(chosen) < top_n:
        rest = np.fromiter(remaining, dtype=np.int64)
        redundancy = pairwise[np.ix_(rest, np.asarray(chosen, dtype=np.int64))].max(axis=1)
        keep = redundancy < near_duplicate
        if not keep.any():
            break
        rest, redundancy = rest[keep], redundancy[keep]
        remaining = set(rest.tolist())
        score = (1 - diversity) * relevance[rest] - diversity * redundancy
        best = int(rest[score.argmax()])
        chosen.append(best)
        remaining.discard(best)
    return [(i, float(np.clip(relevance[i], 0.0, 1.0))) for i in chosen]


class TextEmbedder(InferenceModel):
    """all-MiniLM-L6-v2: 384-d sentence embeddings, keyphrases and zero-shot tags."""

    kind = "text_embedder"

    def _load(self) -> None:
        self._session = self.session("model.onnx")
        self._input_names = [i.name for i in self._session.get_inputs()]
        self.tokenizer = load_tokenizer(self.model_dir / "tokenizer.json")
        calibration = self.manifest.extra.get(CALIBRATION_KEY, FALLBACK_CALIBRATION)
        self.calibration_slope = float(calibration["slope"])
        self.calibration_intercept = float(calibration["intercept"])
        self.default_threshold = DEFAULT_THRESHOLD
        self._prototype_cache: OrderedDict[
            tuple[tuple[str, tuple[str, ...]], ...], VocabularyPrototypes
        ] = OrderedDict()
        self._cache_lock = threading.Lock()
        probe = self._run(*pad_batch([[101, 102]]))
        if probe.shape != (1, EMBEDDING_DIM):
            raise ModelError(f"{self.ref}: output shape {probe.shape}, expected (1, 384)")

    def _predict(self, texts: list[str]) -> np.ndarray:
        return self.embed(texts)

    # --- embeddings ----------------------------------------------------------------------------

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        embeddings: np.ndarray = self._session.run(["sentence_embedding"], feeds)[0]
        return embeddings

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with [CLS]/[SEP], truncated to ``MAX_TOKENS``, unpadded."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def embed_token_ids(
        self, sequences: Sequence[Sequence[int]], *, batch_size: int = 32
    ) -> np.ndarray:
        """Embed tokenised texts in runs of similar length (:func:`plan_batches`, at most
        ``batch_size`` each); rows keep the input order.

        Batching in arrival order pads short texts to the longest one in their batch and halved
        throughput (docs/perf.md); planned runs of sorted texts pad less still.
        """
        out = np.empty((len(sequences), EMBEDDING_DIM), dtype=np.float32)
        for idx, ids, mask in padded_runs(sequences, max_batch=batch_size):
            out[idx] = self._run(ids, mask)
        return out

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """(n, 384) float32, L2-normalised; each text truncated to its first 256 tokens."""
        if len(texts) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return self.embed_token_ids(self.tokenize(texts), batch_size=batch_size)

    def embed_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        max_chunks: int = MAX_DOCUMENT_CHUNKS,
    ) -> np.ndarray:
        """Like :meth:`embed`, but texts over 256 tokens are chunked and averaged (module doc)."""
        if len(texts) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        windows: list[list[int]] = []
        owner: list[int] = []
        for doc, enc in enumerate(self.tokenizer.encode_batch(list(texts))):
            for part in [enc, *enc.overflowing][:max_chunks]:
                windows.append(part.ids)
                owner.append(doc)
        chunk_emb = self.embed_token_ids(windows, batch_size=batch_size)
        weights = np.array([len(w) for w in windows], dtype=np.float32)
        summed = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        np.add.at(summed, np.asarray(owner), chunk_emb * weights[:, None])
        return _normalise(summed)

    # --- keyphrases ----------------------------------------------------------------------------

    def keyphrases(
        self, text: str, *, top_n: int = 8, diversity: float = 0.5
    ) -> list[tuple[str, float]]:
        """Phrases from ``text`` most similar to the whole text, diversified with MMR.

        Scores are cosine similarities to the document embedding, clipped to [0, 1]; the list is
        sorted by score.
        """
        doc = self.embed_documents([text])[0]
        return self._keyphrases_many([doc], [text], top_n=top_n, diversity=diversity)[0]

    def _keyphrases_many(
        self, docs: Sequence[np.ndarray], texts: Sequence[str], *, top_n: int, diversity: float
    ) -> list[list[tuple[str, float]]]:
        # One embed call for every document's candidates keeps batches full. Candidates are
        # most of a tagging job's model work, and the documents of one batch share many of them
        # ("data set", a brand, a city): on scikit-learn's dataset descriptions, 64 texts had
        # ~1,400 candidates but only ~1,000 distinct ones, so each distinct phrase runs once.
        per_doc = [keyphrase_candidates(t, limit=MAX_KEYPHRASE_CANDIDATES) for t in texts]
        unique = list(dict.fromkeys(p for phrases in per_doc for p in phrases))
        row = {p: i for i, p in enumerate(unique)}
        emb = self.embed(unique)
        out: list[list[tuple[str, float]]] = []
        for doc, phrases in zip(docs, per_doc, strict=True):
            cand = emb[[row[p] for p in phrases]]
            picks = mmr(doc, cand, top_n=top_n, diversity=diversity)
            # MMR decides which phrases; callers expect them best first.
            picks.sort(key=lambda pick: -pick[1])
            out.append([(phrases[i], score) for i, score in picks])
        return out

    # --- zero-shot vocabulary ------------------------------------------------------------------

    def prototypes(self, vocabulary: Sequence[VocabularyTerm]) -> VocabularyPrototypes:
        """Embed a vocabulary once (cached per model for the last few vocabularies)."""
        key = tuple(e.key() for e in vocabulary)
        with self._cache_lock:
            cached = self._prototype_cache.get(key)
            if cached is not None:
                self._prototype_cache.move_to_end(key)
                return cached
        phrasings = [e.phrasings() for e in vocabulary]
        emb = self.embed([p for ps in phrasings for p in ps])
        rows, start = [], 0
        for ps in phrasings:
            rows.append(emb[start : start + len(ps)].mean(axis=0))
            start += len(ps)
        matrix = _normalise(np.array(rows).reshape(len(vocabulary), EMBEDDING_DIM))
        protos = VocabularyPrototypes(tuple(e.name for e in vocabulary), matrix, self.ref)
        with self._cache_lock:
            self._prototype_cache[key] = protos
            while len(self._prototype_cache) > PROTOTYPE_CACHE_SIZE:
                self._prototype_cache.popitem(last=False)
        return protos

    def similarities(
        self,
        doc_embeddings: np.ndarray,
        vocabulary: Sequence[VocabularyTerm] | VocabularyPrototypes,
    ) -> np.ndarray:
        """Cosine similarity of each document (rows) to each vocabulary prototype (columns)."""
        protos = (
            vocabulary
            if isinstance(vocabulary, VocabularyPrototypes)
            else self.prototypes(vocabulary)
        )
        if protos.model_ref != self.ref:
            # The registry can swap model versions under a long-lived caller holding prototypes.
            raise ValueError(f"prototypes were embedded by {protos.model_ref}, not {self.ref}")
        docs = np.atleast_2d(np.asarray(doc_embeddings, dtype=np.float32))
        similarities: np.ndarray = docs @ protos.matrix.T
        return similarities

    def probabilities(self, similarities: np.ndarray) -> np.ndarray:
        z = self.calibration_slope * similarities + self.calibration_intercept
        return 1.0 / (1.0 + np.exp(-z))

    def zero_shot(
        self,
        doc_embeddings: np.ndarray,
        vocabulary: Sequence[VocabularyTerm] | VocabularyPrototypes,
        *,
        threshold: float | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Per document, ``(tag, probability)`` at or above ``threshold`` (default 0.5), best first.

        ``vocabulary`` may be a list of entries or, to embed it only once across many calls,
        the result of :meth:`prototypes`.
        """
        protos = (
            vocabulary
            if isinstance(vocabulary, VocabularyPrototypes)
            else self.prototypes(vocabulary)
        )
        if not protos.names:
            return [[] for _ in range(np.atleast_2d(doc_embeddings).shape[0])]
        cut = self.default_threshold if threshold is None else threshold
        probs = self.probabilities(self.similarities(doc_embeddings, protos))
        out = []
        for row in probs:
            order = np.argsort(-row, kind="stable")
            out.append([(protos.names[j], float(row[j])) for j in order if row[j] >= cut])
        return out

    # --- everything at once --------------------------------------------------------------------

    def tag_texts(
        self,
        texts: Sequence[str],
        vocabulary: Sequence[VocabularyTerm] | VocabularyPrototypes | None,
        *,
        top_n: int = 8,
        diversity: float = 0.5,
        threshold: float | None = None,
    ) -> list[TextTags]:
        if len(texts) == 0:
            return []
        docs = self.embed_documents(texts)
        phrases = self._keyphrases_many(list(docs), texts, top_n=top_n, diversity=diversity)
        tags: list[list[tuple[str, float]]] = (
            self.zero_shot(docs, vocabulary, threshold=threshold)
            if vocabulary
            else [[] for _ in texts]
        )
        return [
            TextTags(embedding=d, keyphrases=k, vocabulary_tags=t)
            for d, k, t in zip(docs, phrases, tags, strict=True)
        ]

    def tag_text(
        self,
        text: str,
        vocabulary: Sequence[VocabularyTerm] | VocabularyPrototypes | None,
        *,
        top_n: int = 8,
        diversity: float = 0.5,
        threshold: float | None = None,
    ) -> TextTags:
        return self.tag_texts(
            [text], vocabulary, top_n=top_n, diversity=diversity, threshold=threshold
        )[0]
