"""The text generator's data: documents as one token stream, tags as control codes, splits.

Tokens are UTF-8 bytes (0..255) plus one control code per tag (256, 257, ...). Byte 0 separates
documents: it ends every document, and starts an untagged one. A tagged document starts with its
tag's control code instead, so the model learns how each tag's texts read and the server steers
a sample by priming it with that code. The model never predicts a control code (they are inputs
only): positions whose next token is one are left out of the loss and of every score.

The n-gram sees the same documents without control codes (:func:`bytes_only`): it is not
conditioned, and its context is exactly what the server has, the last bytes of 0 + prompt.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EOS = 0
VOCAB_SIZE = 256
# A tag needs this many training documents to get a control code: fewer teach it nothing.
MIN_TAG_DOCS = 8
MAX_TAGS = 64


@dataclass(frozen=True)
class Document:
    text: str
    tag: str | None = None


def documents(texts: Sequence[str], tags: Sequence[str | None] | None = None) -> list[Document]:
    """Pair texts with their tags (``None``: untagged), dropping empty texts."""
    if tags is not None and len(tags) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(tags)} tags")
    pairs = zip(texts, tags if tags is not None else [None] * len(texts), strict=True)
    return [Document(t, g or None) for t, g in pairs if t.strip()]


def split_documents(
    docs: Sequence[Document], val_fraction: float, seed: int
) -> tuple[list[Document], list[Document]]:
    """Split whole documents, so no validation text is half seen in training. The split is
    stratified by tag: every tag with at least two documents has validation documents, so its
    per-tag figures exist."""
    if len(docs) < 2:
        raise ValueError("need at least 2 non-empty texts (one for validation)")
    rng = random.Random(seed)
    groups: dict[str | None, list[int]] = {}
    for i, d in enumerate(docs):
        groups.setdefault(d.tag, []).append(i)
    held: set[int] = set()
    for tag in sorted(groups, key=lambda t: (t is not None, t or "")):
        members = groups[tag]
        rng.shuffle(members)
        if len(members) >= 2:
            n = min(len(members) - 1, max(1, round(len(members) * val_fraction)))
            held.update(members[:n])
    if not held:  # every group a single document
        held.add(rng.randrange(len(docs)))
    val = [docs[i] for i in range(len(docs)) if i in held]
    train = [docs[i] for i in range(len(docs)) if i not in held]
    return train, val


def split_texts(
    texts: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """:func:`split_documents` for untagged texts."""
    train, val = split_documents(documents(texts), val_fraction, seed)
    return [d.text for d in train], [d.text for d in val]


def tag_vocabulary(train: Sequence[Document]) -> list[str]:
    """Tags that get a control code: those on at least MIN_TAG_DOCS training documents, the
    MAX_TAGS most frequent, sorted by name so the codes do not depend on document order."""
    counts = Counter(d.tag for d in train if d.tag)
    common = [t for t, n in counts.most_common(MAX_TAGS) if n >= MIN_TAG_DOCS]
    return sorted(common)


def encode(
    docs: Sequence[Document],
    tag_ids: dict[str, int] | None = None,
    *,
    drop_tags: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """One stream: 0, doc, 0, doc, ..., 0, where a tagged doc's leading 0 becomes its control
    code (256 + id). ``drop_tags`` of the tagged documents are left untagged (seeded), so one
    model also knows how a text reads when no tag is given."""
    tag_ids = tag_ids or {}
    rng = random.Random(seed)
    tokens: list[np.ndarray] = [np.array([EOS], np.int32)]
    for d in docs:
        body = np.frombuffer(d.text.replace("\x00", "").encode("utf-8"), np.uint8)
        code = tag_ids.get(d.tag) if d.tag else None
        if code is not None and rng.random() >= drop_tags:
            # The control code takes the place of the separator that would start the document.
            tokens[-1] = np.array([EOS, VOCAB_SIZE + code], np.int32)
        tokens.append(body.astype(np.int32))
        tokens.append(np.array([EOS], np.int32))
    return np.concatenate(tokens)


def encode_documents(texts: Sequence[str]) -> np.ndarray:
    """Untagged texts as a byte stream: 0, doc, 0, doc, ..., 0 (NUL inside a text would fake a
    boundary, so it is dropped)."""
    return encode(documents(texts)).astype(np.uint8)


def bytes_only(stream: np.ndarray) -> np.ndarray:
    """The stream without control codes: what the n-gram counts and scores."""
    return stream[stream < VOCAB_SIZE].astype(np.uint8)


def scored(stream: np.ndarray) -> np.ndarray:
    """Positions 1.. of ``stream`` whose token is a byte (a control code is never predicted)."""
    return np.flatnonzero(stream[1:] < VOCAB_SIZE) + 1


# ---------------------------------------------------------------------------------------------
# batch layouts


def stream_layout(n_tokens: int, batch: int, seq_len: int) -> tuple[int, int]:
    """(streams, steps per epoch) of truncated backpropagation through time: the training
    stream is cut into ``streams`` contiguous rows read ``seq_len`` tokens per step, the hidden
    state carried from one step to the next."""
    streams = max(1, min(batch, (n_tokens - 1) // (seq_len + 1)))
    steps = max(1, (n_tokens - 1) // streams // seq_len)
    return streams, steps


def epoch_rows(n_tokens: int, batch: int, seq_len: int, seed: int, epoch: int) -> np.ndarray:
    """Start offset of every row in one epoch. Each epoch shifts the rows by a seeded offset,
    so the cuts between steps fall elsewhere; a pure function of (seed, epoch), so a resumed run
    replays exactly the batches the dead worker would have seen."""
    streams, steps = stream_layout(n_tokens, batch, seq_len)
    per = steps * seq_len
    slack = max(0, n_tokens - 1 - per * streams)
    shift = int(np.random.default_rng([seed, epoch]).integers(0, min(seq_len, slack) + 1))
    return shift + np.arange(streams) * per


def eval_layout(n_tokens: int, streams: int) -> tuple[int, int]:
    """(streams, tokens per stream) of an evaluation: it scores positions 1 .. streams * per."""
    streams = max(1, min(streams, (n_tokens - 1) // 2))
    return streams, (n_tokens - 1) // streams
