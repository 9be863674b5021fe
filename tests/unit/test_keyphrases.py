"""Keyphrase candidates are noun phrases an editor would keep (workers/tagging/keyphrases.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from workers.tagging.keyphrases import (
    STOPWORDS,
    keyphrase_candidates,
    phrase_key,
    tokenize,
)
from workers.tagging.text import mmr

MERGERS = (
    "This week saw three merger deals worth about $60 billion--including one that ranks as the "
    "largest software merger in history."
)
# Anything but letters, digits, spaces and inner hyphens/apostrophes is debris in a tag.
DEBRIS = re.compile(r"[^\w\s'\u2019-]|--|(?:^|\s)[-'\u2019]|[-'\u2019](?:\s|$)|_")


def _problems(phrase: str) -> list[str]:
    words = phrase.split()
    found = []
    if words[0].lower() in STOPWORDS or words[-1].lower() in STOPWORDS:
        found.append("stop word at an edge")
    if DEBRIS.search(phrase):
        found.append("punctuation debris")
    if any(w.isdigit() for w in words):
        found.append("numbers-only token")
    return found


def test_the_issue_example_gives_noun_phrases() -> None:
    cands = [c.lower() for c in keyphrase_candidates(MERGERS)]
    assert "software merger" in cands and "merger deals" in cands
    for debris in (
        "merger deals worth",
        "saw three merger",
        "week saw three",
        "billion--including",
        "three merger deals",
        "largest software",
        "largest software merger",
        "week",
    ):
        assert debris not in cands
    assert not any("billion" in c or "including" in c or "saw" in c for c in cands)


def test_tokens_split_punctuation_and_clitics() -> None:
    (sentence,) = tokenize("The firm's e-mail didn't fail--again")
    assert sentence == ["The", "firm", "'s", "e-mail", "did", "n't", "fail", "--", "again"]


@pytest.mark.parametrize(
    "text",
    [
        "Prices rose 3.5% in 2023 (see Table 2), said J. Smith; 1,000 units sold.",
        "Visit http://example.com/path?q=1 or mail info@example.com -- it's free!!!",
        "\"Quoted\" words, 'single quotes' & ampersands... and 24/7 support_team #hashtags",
    ],
)
def test_no_debris_in_messy_text(text: str) -> None:
    for cand in keyphrase_candidates(text):
        assert not _problems(cand), (cand, _problems(cand))


def test_real_text_corpus_is_clean() -> None:
    # The fortune files the text generator trains on: quotes, verse, dialogue and punctuation
    # of every kind; ~2,000 texts run in about a second.
    text_generator = pytest.importorskip("workers.training.build.text_generator")
    try:
        fortunes = text_generator.load_fortunes(limit=2000)
    except (ImportError, OSError) as exc:  # the fortunes wheel is in the train extra
        pytest.skip(f"fortunes not installed: {exc}")
    seen = 0
    bad: list[tuple[str, list[str]]] = []
    for text in fortunes:
        for cand in keyphrase_candidates(text):
            seen += 1
            if _problems(cand):
                bad.append((cand, _problems(cand)))
    assert seen > 5000
    assert bad == []


def test_scikit_learn_dataset_descriptions_are_clean() -> None:
    # Technical prose with citations, URLs, tables and reST markup, shipped inside scikit-learn.
    descr = pytest.importorskip("sklearn.datasets.descr")
    from importlib.resources import files

    texts = [
        p.read_text(encoding="utf-8") for p in files(descr).iterdir() if p.name.endswith(".rst")
    ]
    cands = [c for t in texts for c in keyphrase_candidates(t)]
    assert len(cands) > 300
    assert [(c, _problems(c)) for c in cands if _problems(c)] == []


def test_near_duplicates_are_merged() -> None:
    text = (
        "The merger deal closed. Two merger deals followed, and another merger deal is due. "
        "Quantum games and a quantum game."
    )
    cands = keyphrase_candidates(text)
    lowered = [c.lower() for c in cands]
    assert lowered.count("merger deal") + lowered.count("merger deals") == 1
    assert "merger deal" in lowered  # the most frequent surface form (2 of 3) wins
    assert len({phrase_key(c) for c in cands}) == len(cands)
    assert sum(c in ("quantum games", "quantum game") for c in lowered) == 1


def test_proper_names_keep_their_joins() -> None:
    cands = keyphrase_candidates("The Bank of England raised rates. Rates rose again!")
    assert "Bank of England" in cands
    assert not any(c.lower().startswith(("the ", "of ")) for c in cands)


def test_mmr_never_picks_an_embedding_near_duplicate() -> None:
    doc = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    cand = np.array(
        [[0.99, 0.141, 0.0], [0.98, 0.199, 0.0], [0.6, 0.0, 0.8]], dtype=np.float32
    )  # rows 0 and 1 are ~0.998 alike
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    picks = [i for i, _ in mmr(doc, cand, top_n=3, diversity=0.0)]
    assert picks == [0, 2]
    assert [i for i, _ in mmr(doc, cand, top_n=3, diversity=0.0, near_duplicate=1.01)] == [
        0,
        1,
        2,
    ]
