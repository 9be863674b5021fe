"""Tokenisation and batching for the text embedder: the tokenizer's settings, padding, and the
plan that groups texts of similar length into model runs (:func:`plan_batches`).

:class:`~workers.tagging.text.TextEmbedder` runs every batch through :func:`padded_runs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

MAX_TOKENS = 256
CHUNK_STRIDE = 32
# plan_batches' cost model, in token-times, as bench/bench_text_tagger.py fits it for this model
# on one thread: a run costs as much as RUN_COST_TOKENS tokens; past MAX_BATCH_TOKENS padded
# tokens a run's activations outgrow the caches and each token costs more (see docs/perf.md).
RUN_COST_TOKENS = 18
MAX_BATCH_TOKENS = 1024


def load_tokenizer(path: Path, *, max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """The shipped tokenizer, with truncation and padding set here, not taken from the file.

    The file says truncate at 128 and pad to a fixed 128: the first would cut documents short, the
    second would make every batch cost 128 tokens. Padding is off because batches are padded
    after sorting by length (:func:`pad_batch`); truncation keeps overflowing windows so long
    documents can be chunked from one tokenisation pass.
    """
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens, stride=CHUNK_STRIDE)
    return tokenizer


def pad_batch(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token ids with 0 ([PAD]) to the longest; return (input_ids, attention_mask)."""
    width = max((len(s) for s in sequences), default=0)
    ids = np.zeros((len(sequences), width), dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
    return ids, mask


def plan_batches(
    lengths: Sequence[int],
    *,
    max_batch: int = 32,
    run_cost: int = RUN_COST_TOKENS,
    max_tokens: int = MAX_BATCH_TOKENS,
) -> list[list[int]]:
    """Group sequences (by index) into model runs that waste little work on padding.

    A run of ``b`` sequences padded to length ``L`` costs about ``run_cost + b * L`` token-times
    on CPU: every padded token goes through all six layers, and each run also streams the
    ~42 MB of weights once. Fixed batches of 32 sorted texts pad a 40-token text to the 200
    tokens of the longest in its batch; this cuts the sorted lengths into runs of at most
    ``max_batch`` sequences and ``max_tokens`` padded tokens (larger runs fall out of the caches
    and cost more per token) minimising that cost, by dynamic programming over the sorted order
    (``bench/bench_tagging_e2e.py`` and ``bench/bench_text_tagger.py`` compare the two).
    Returns lists of indices into ``lengths``, shortest first.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest plan for the j shortest
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = lengths[order[j - 1]]  # the longest of any run that ends at j
        for i in range(j - 1, max(0, j - max_batch) - 1, -1):
            size = j - i
            if size > 1 and size * width > max_tokens:
                break
            cost = best[i] + run_cost + size * width
            if cost < best[j]:
                best[j], cut[j] = cost, i
    runs: list[list[int]] = []
    j = n
    while j > 0:
        runs.append(order[cut[j] : j])
        j = cut[j]
    return runs[::-1]


def padded_runs(
    sequences: Sequence[Sequence[int]], *, max_batch: int = 32
) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """The model runs :meth:`TextEmbedder.embed_token_ids` makes of ``sequences``:
    ``(indices, input_ids, attention_mask)`` for each run of :func:`plan_batches`."""
    runs = plan_batches([len(s) for s in sequences], max_batch=max_batch)
    return [(run, *pad_batch([sequences[i] for i in run])) for run in runs]
