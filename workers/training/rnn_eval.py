"""Scoring the text generator: validation bits of the RNN, of the n-gram on the same positions,
and per tag (each document read alone, primed with and without its control code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workers.generation.mixture import MixtureGate, bits
from workers.generation.ngram import KneserNey
from workers.training.text_data import (
    VOCAB_SIZE,
    Document,
    bytes_only,
    encode,
    eval_layout,
    scored,
)

if TYPE_CHECKING:
    from workers.training.rnn import CharGRU, RNNConfig

EVAL_STREAMS = 16
# Per-tag figures read each document alone; this many per tag keep that to seconds.
MAX_TAG_EVAL_DOCS = 300


@torch.no_grad()
def evaluate_probs(
    model: CharGRU, stream: np.ndarray, cfg: RNNConfig, streams: int = EVAL_STREAMS
) -> np.ndarray:
    """P(true next token) at every byte position of 1 .. streams * per of ``stream`` (see
    :func:`eval_layout`; control-code positions are skipped), the hidden state carried across
    chunks (no cold start per chunk)."""
    was_training = model.training
    model.eval()
    data = torch.from_numpy(stream.astype(np.int64))
    streams, per = eval_layout(len(data), streams)
    x_all = data[: per * streams].view(streams, per)
    y_all = data[1 : per * streams + 1].view(streams, per)
    h = torch.zeros(cfg.layers, streams, cfg.hidden)
    logp = torch.empty(streams, per)
    chunk = 256
    for i in range(0, per, chunk):
        logits, h = model(x_all[:, i : i + chunk], h)
        y = y_all[:, i : i + chunk].clamp(max=VOCAB_SIZE - 1)
        logp[:, i : i + chunk] = logits.log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    model.train(was_training)
    # Row-major: stream r covers positions r * per + 1 .., so the flat order is the byte order.
    flat = logp.numpy().astype(np.float64).reshape(-1)
    probs: np.ndarray = np.exp(flat[_eval_positions(stream, streams, per) - 1])
    return probs


def _eval_positions(stream: np.ndarray, streams: int, per: int) -> np.ndarray:
    positions = scored(stream)
    return positions[positions <= streams * per]


def ngram_view(kn: KneserNey, stream: np.ndarray, streams: int) -> tuple[np.ndarray, np.ndarray]:
    """The n-gram's P(true byte) and longest-context count at the positions
    :func:`evaluate_probs` scores (the n-gram reads the stream without control codes)."""
    plain = bytes_only(stream)
    byte_index = np.cumsum(stream < VOCAB_SIZE) - 1  # position in `plain` of each byte
    n_streams, per = eval_layout(len(stream), streams)
    at = byte_index[_eval_positions(stream, n_streams, per)]
    return kn.probs(plain)[at], kn.context_counts(plain)[at]


def evaluate_bpc(
    model: CharGRU, stream: np.ndarray, cfg: RNNConfig, streams: int = EVAL_STREAMS
) -> float:
    """Bits per byte of :func:`evaluate_probs`."""
    return bits(evaluate_probs(model, stream, cfg, streams))


def per_tag(
    model: CharGRU,
    cfg: RNNConfig,
    val: Sequence[Document],
    tag_ids: dict[str, int],
    kn: KneserNey,
    gate: MixtureGate,
) -> dict[str, dict[str, Any]]:
    """Validation bits of each tag's documents, each read from a fresh state as a sample is
    generated: primed with the tag's control code, and with the separator (the same model,
    unconditioned); RNN alone and mixed as served."""
    out: dict[str, dict[str, Any]] = {}
    for tag in tag_ids:
        docs = [d for d in val if d.tag == tag][:MAX_TAG_EVAL_DOCS]
        if not docs:
            continue
        row: dict[str, Any] = {"val_documents": len(docs)}
        for key, ids in (("tagged", tag_ids), ("untagged", {})):
            p_rnn, p_kn, counts = [], [], []
            for doc in docs:
                stream = encode([doc], ids)
                p_rnn.append(evaluate_probs(model, stream, cfg, streams=1))
                kn_probs, kn_counts = ngram_view(kn, stream, streams=1)
                p_kn.append(kn_probs)
                counts.append(kn_counts)
            rnn_all, kn_all, counts_all = map(np.concatenate, (p_rnn, p_kn, counts))
            row[f"val_bpc_{key}"] = bits(rnn_all)
            row[f"mixture_val_bpc_{key}"] = bits(gate.mix(rnn_all, kn_all, counts_all))
        out[tag] = row
    return out
