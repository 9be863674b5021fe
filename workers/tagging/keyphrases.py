"""Keyphrase candidates: noun phrases an editor would keep, ranked later by MiniLM with MMR.

The n-gram candidates this replaces gave fragments such as ``saw three merger`` or
``billion--including``: any 1-3 words between stop words, verbs and numbers included. Here a
candidate is a noun phrase found by part-of-speech patterns:

1. **Tokens.** A small regex tokenizer splits words from punctuation (``billion--including`` is
   three tokens) and splits off clitics (``firm's``, ``didn't``) so the tagger sees Penn
   Treebank tokens.
2. **Tags.** The Brill tagger of Pattern as TextBlob ships it (``textblob.en.parser``): a
   ~100,000-word lexicon plus suffix and context rules, all plain files inside the wheel, so
   nothing is downloaded at run time (NLTK's and spaCy's taggers fetch their data separately).
   Its accuracy on news and its cost per sentence are in docs/perf.md.
3. **Chunks.** A noun phrase is a run of adjectives (``JJ``), gerunds (``VBG``, as in
   ``operating system``) and nouns that ends in a noun, at most ``MAX_WORDS`` long (the last
   words of a longer run). Comparatives and superlatives (``largest software merger``) are left
   out: they rate, they do not name. Proper names joined by ``of``/``for``/``and``
   (``Bank of England``) are one phrase too.
4. **Cleaning.** Every word has a letter and at least two characters, with no punctuation but
   inner hyphens/apostrophes; numbers-only tokens and stop words never enter a phrase, so no
   phrase starts or ends with one. One-word phrases that are generic nouns (``week``, ``way``)
   are dropped. A text with no noun phrase at all falls back to its content words (nouns,
   verbs, adjectives), still clean, so it gets some tag.
5. **Near-duplicates.** Phrases with the same Porter stems (``merger deal``/``merger deals``)
   are one candidate, shown in its most frequent surface form. :func:`mmr` in ``text.py`` then
   drops phrases whose embeddings nearly coincide with one already picked.

``bench/bench_keyphrases.py`` measures the result against KeyBERT and YAKE (docs/keyphrases.md).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from typing import Any

MAX_WORDS = 4
MAX_CANDIDATES = 256

STOPWORDS = frozenset(
    # A word list reads better as text than as 300 quoted items. Function words, plus the
    # quantifiers, vague adjectives and number words that a tagger calls JJ/NN but that never
    # head or open a keyphrase ("several methods", "other results", "three deals").
    """a about above according across after afterwards again against all almost alone along
    already also although always am among amongst an and another any anybody anyhow anyone
    anything anyway anywhere are around as at away be became because become becomes becoming
    been before beforehand behind being below beside besides between beyond both but by can
    cannot certain could did do does doing done down due during each eg either else elsewhere
    enough especially etc even ever every everybody everyone everything everywhere except few
    for former formerly from further furthermore get gets getting got had has have having he
    hence her here hereby herein hers herself him himself his how however i ie if in indeed
    instead into is it its itself just least less let like likely many may maybe me meanwhile
    might more moreover most mostly much must my myself namely neither never nevertheless next
    no nobody none nor not nothing now nowhere of off often on once one only onto or other
    others otherwise our ours ourselves out over own per perhaps please possible quite rather
    really same several shall she should since so some somebody somehow someone something
    sometime sometimes somewhat somewhere such than that the their theirs them themselves then
    thence there thereafter thereby therefore therein these they this those though through
    throughout thus to together too toward towards under unless until up upon us usually
    various very via was we well were what whatever when whence whenever where whereas whereby
    wherein whether which while whither who whoever whole whom whose why will with within
    without would yet you your yours yourself yourselves
    zero two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty
    hundred hundreds thousand thousands million millions billion billions trillion first second
    third fourth fifth last previous recent current new old different similar main major
    particular specific general good great high low large small big able actual present
    proposed given based used using called known related respective overall further""".split()  # noqa: SIM905
)
# One-word phrases too generic to tag anything with; they may still be part of a longer phrase
# ("response time", "working paper").
GENERIC_NOUNS = frozenset(
    """time times day days week weeks month months year years today yesterday tomorrow way ways
    thing things lot lots kind kinds sort sorts type types part parts case cases example
    examples fact facts number numbers paper article people person someone use uses result
    results""".split()  # noqa: SIM905
)
# Joins inside proper names: "Bank of England", "Department for Education", "Johnson and Johnson".
NAME_JOINS = frozenset({"of", "for", "and", "de", "du", "la", "von", "van", "del"})

NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
PROPER_TAGS = frozenset({"NNP", "NNPS"})
MODIFIER_TAGS = frozenset({"JJ", "VBG"}) | NOUN_TAGS
FALLBACK_TAGS = frozenset({"NN", "VB", "JJ"})  # tag prefixes of single-word fallbacks

# Clitics are split off the way the tagger's lexicon (Penn Treebank) spells them.
_CLITIC = re.compile(r"(?i)(n)['\u2019](t)\b|['\u2019](s|re|ve|ll|d|m)\b")
# A token: an abbreviation (U.S.), a clitic, a word (letters/digits, single ' or - between
# them: "billion--including" is three tokens, covtype_dataset is debris), or a run of
# punctuation. Punctuation tokens are kept: the tagger reads them as context, and phrases never
# span them.
_TOKEN = re.compile(
    r"(?:[^\W\d_]\.){2,}|n't|'(?:s|re|ve|ll|d|m)\b|[^\W_](?:['\u2019-]?[^\W_])*|[^\w\s]+|_+"
)
_WORD = re.compile(r"[^\W_](?:['\u2019-]?[^\W_])*")
_SENTENCE_END = frozenset({".", "!", "?", ";", ":"})


def tokenize(text: str) -> list[list[str]]:
    """Sentences of tokens (clause-ending punctuation closes a sentence)."""
    text = _CLITIC.sub(
        lambda m: f" {m.group(1)}'{m.group(2)}" if m.group(1) else f" '{m.group(3)}", text
    )
    sentences: list[list[str]] = []
    current: list[str] = []
    for token in _TOKEN.findall(text):
        current.append(token)
        if token in _SENTENCE_END or token[-1] in "!?":
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


@functools.cache
def _parser() -> Any:
    # Imported on first use: textblob pulls in nltk (~1 s), which only text workers need.
    from textblob.en import parser

    return parser


def pos_tag(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """Penn Treebank tags for one sentence of tokens."""
    if not tokens:
        return []
    return [(word, tag) for word, tag in _parser().find_tags(list(tokens))]


@functools.cache
def _stemmer() -> Any:
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Porter stem of a lower-cased word (the key near-duplicates share)."""
    return str(_stemmer().stem(word.lower()))


def phrase_key(phrase: str) -> tuple[str, ...]:
    return tuple(stem(w) for w in phrase.split())


def is_clean_word(word: str) -> bool:
    """A word a phrase may hold: a letter, two characters or more, no punctuation debris."""
    return (
        len(word) >= 2
        and _WORD.fullmatch(word) is not None
        and any(c.isalpha() for c in word)
        and word.lower() not in STOPWORDS
    )


def _runs(tagged: Sequence[tuple[str, str]]) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """Maximal runs of clean modifier/noun tokens, with the index of their first token."""
    run: list[tuple[str, str]] = []
    for i, (word, tag) in enumerate(tagged):
        if tag in MODIFIER_TAGS and is_clean_word(word):
            run.append((word, tag))
            continue
        if run:
            yield i - len(run), run
        run = []
    if run:
        yield len(tagged) - len(run), run


def noun_phrases(tagged: Sequence[tuple[str, str]]) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """Noun phrases of one tagged sentence with their start index (module doc, step 3)."""
    for start, run in _runs(tagged):
        # Drop trailing modifiers: a phrase ends in its head noun ("merger deals worth" -> no).
        end = len(run)
        while end and run[end - 1][1] not in NOUN_TAGS:
            end -= 1
        if end:
            # Over-long runs keep their last words, where English puts the head noun.
            begin = max(0, end - MAX_WORDS)
            yield start + begin, run[begin:end]
    yield from _proper_name_joins(tagged)


def _proper_name_joins(
    tagged: Sequence[tuple[str, str]],
) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """``NNP+ (of|for|and) NNP+``: one name, not two ("Bank of England")."""
    for i in range(1, len(tagged) - 1):
        word, _ = tagged[i]
        if word.lower() not in NAME_JOINS:
            continue
        left: list[tuple[str, str]] = []
        j = i - 1
        while j >= 0 and tagged[j][1] in PROPER_TAGS and is_clean_word(tagged[j][0]):
            left.insert(0, tagged[j])
            j -= 1
        right: list[tuple[str, str]] = []
        k = i + 1
        while k < len(tagged) and tagged[k][1] in PROPER_TAGS and is_clean_word(tagged[k][0]):
            right.append(tagged[k])
            k += 1
        if left and right and len(left) + len(right) + 1 <= MAX_WORDS:
            yield j + 1, [*left, tagged[i], *right]


def _surface(phrase: Sequence[tuple[str, str]], sentence_start: bool) -> str:
    words = [w for w, _ in phrase]
    # A common word capitalised only because it opens the sentence is shown lower-case.
    if sentence_start and phrase[0][1] not in PROPER_TAGS and not words[0].isupper():
        words[0] = words[0].lower()
    return " ".join(words)


def keyphrase_candidates(text: str, *, limit: int = MAX_CANDIDATES) -> list[str]:
    """Distinct noun phrases of ``text`` (module doc), in order of first appearance.

    Phrases with the same stems are one candidate, in their most frequent surface form (ties:
    first seen). When there are more than ``limit``, the most frequent are kept, which bounds
    the embedding cost of long documents.
    """
    counts: dict[tuple[str, ...], int] = {}
    forms: dict[tuple[str, ...], dict[str, int]] = {}
    sentences = [pos_tag(sentence) for sentence in tokenize(text)]
    for tagged in sentences:
        # The first word after any opening quotes or brackets.
        opening = next((i for i, (w, _) in enumerate(tagged) if _WORD.fullmatch(w)), -1)
        for start, phrase in noun_phrases(tagged):
            if len(phrase) == 1 and phrase[0][0].lower() in GENERIC_NOUNS:
                continue
            surface = _surface(phrase, start == opening)
            key = phrase_key(surface)
            counts[key] = counts.get(key, 0) + 1
            per_key = forms.setdefault(key, {})
            per_key[surface] = per_key.get(surface, 0) + 1
    if not counts:
        # No noun phrase at all (a verb-only headline, "Nothing to classify here."): the
        # content words still describe the item better than no tag.
        for tagged in sentences:
            for word, tag in tagged:
                if tag[:2] in FALLBACK_TAGS and is_clean_word(word):
                    surface = word if tag in PROPER_TAGS else word.lower()
                    if surface.lower() in GENERIC_NOUNS:
                        continue
                    key = phrase_key(surface)
                    counts[key] = counts.get(key, 0) + 1
                    forms.setdefault(key, {}).setdefault(surface, 1)
    # dicts keep first-seen order, and sorted() is stable.
    keys = sorted(counts, key=lambda k: -counts[k])[:limit] if len(counts) > limit else counts
    return [max(forms[k], key=lambda s: forms[k][s]) for k in keys]
