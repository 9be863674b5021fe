"""Facet semantics: single answers exactly one entry with its probability, multi thresholds."""

from __future__ import annotations

import numpy as np

from workers.tagging.facets import Facet, FacetedVocabulary, facet_tags, self_train, softmax
from workers.tagging.text import VocabularyTerm


def _vocab(facet_of: list[str | None], facets: list[Facet], thresholds=None) -> FacetedVocabulary:
    return FacetedVocabulary(
        entries=[VocabularyTerm(f"e{j}") for j in range(len(facet_of))],
        facet_of=facet_of,
        thresholds=thresholds or [None] * len(facet_of),
        facets={f.name: f for f in facets},
    )


def test_single_facet_answers_exactly_one_with_its_softmax_probability() -> None:
    vocab = _vocab(["s", "s", "s"], [Facet("s", "single")])
    probs = np.full((3, 3), 0.01)  # every entry far under any threshold
    logits = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    tags = facet_tags(vocab, probs, logits, default_threshold=0.5)
    assert [len(t) for t in tags] == [1, 1, 1]
    assert tags[0][0][0] == "e1"
    assert abs(tags[0][0][1] - softmax(logits[0])[1]) < 1e-9
    assert tags[1][0][0] == "e2"
    assert abs(tags[2][0][1] - 1 / 3) < 1e-9  # a tie still answers (the first), at 1/3


def test_none_only_when_asked() -> None:
    logits = np.array([[0.0, 0.1], [0.0, 4.0]])
    probs = np.zeros((2, 2))
    plain = _vocab(["s", "s"], [Facet("s", "single")])
    assert [len(t) for t in facet_tags(plain, probs, logits, default_threshold=0.5)] == [1, 1]
    allowing = _vocab(["s", "s"], [Facet("s", "single", allow_none=True, none_below=0.9)])
    tags = facet_tags(allowing, probs, logits, default_threshold=0.5)
    assert tags[0] == [] and [n for n, _ in tags[1]] == ["e1"]


def test_multi_and_facetless_entries_use_their_thresholds() -> None:
    vocab = _vocab([None, "m", "m"], [Facet("m", "multi")], thresholds=[None, 0.8, 0.2])
    probs = np.array([[0.5, 0.7, 0.3], [0.49, 0.85, 0.1]])
    tags = facet_tags(vocab, probs, np.zeros_like(probs), default_threshold=0.5)
    assert tags[0] == [("e0", 0.5), ("e2", 0.3)]  # e1 under its own 0.8
    assert tags[1] == [("e1", 0.85)]  # e0 under the default, e2 under its 0.2


def test_single_and_multi_facets_together() -> None:
    vocab = _vocab(
        ["s", "s", None], [Facet("s", "single"), Facet("unused", "multi")], thresholds=None
    )
    probs = np.array([[0.0, 0.0, 0.9]])
    logits = np.array([[2.0, 1.0, 0.0]])
    [tags] = facet_tags(vocab, probs, logits, default_threshold=0.5)
    assert [n for n, _ in tags] == ["e2", "e0"]  # best first, one from the single facet


def test_self_training_moves_prototypes_towards_the_corpus_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4, 16, dtype=np.float32)
    corpus = np.concatenate([c + 0.3 * rng.standard_normal((50, 16)) for c in centres[:2]])
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    # Phrasings half-way between the true centre and a distractor direction.
    phrasings = [
        (centres[j] + centres[j + 2])[None, :] / np.sqrt(2, dtype=np.float32) for j in range(2)
    ]
    protos = self_train(phrasings, corpus.astype(np.float32))
    assert protos.shape == (2, 16)
    for j in range(2):
        assert protos[j] @ centres[j] > phrasings[j][0] @ centres[j]
