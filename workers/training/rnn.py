"""Train a byte-level GRU language model and publish it as an ONNX ``text_generator``.

The model reads UTF-8 bytes (vocabulary 256, so any prompt can be encoded and no vocabulary file
can drift from the weights) plus one control code per tag of the corpus (workers/training/
text_data.py): a sample primed with a tag's code reads like that tag's texts. Byte 0 separates
documents, so the server primes an untagged prompt after a 0 and stops a sample at a 0.

Training reads the corpus as ``batch_size`` contiguous rows, ``seq_len`` bytes per step, the
hidden state carried from step to step (truncated backpropagation through time): the model
learns from contexts far longer than one step, as it is used when it generates. It runs to a
time budget, evaluates on validation after every epoch and keeps the best weights.

Quality is reported as validation bits per byte (``val_bpc``; bits per character on ASCII text)
next to a modified Kneser-Ney byte n-gram fitted on the same training split and scored on the
same bytes. The served model mixes the two with a weight per bucket of how often the n-gram saw
the context (workers/generation/mixture.py; ``mixture_val_bpc``), and the n-gram tables ship
beside the ONNX file (docs/text-generator.md).

``train_text_generator`` is a plain function for the Celery training task: progress, cancellation
and checkpoint/resume are hooks, and nothing here touches the database or the broker.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.inference.manifest import Manifest
from workers.generation.mixture import MixtureGate, best_mixture_weight, bits
from workers.generation.ngram import KneserNey
from workers.generation.ngram import kneser_ney_bpc as kneser_ney_bpc  # re-exported
from workers.generation.ngram import kneser_ney_probs as kneser_ney_probs  # re-exported
from workers.training.checkpoints import (
    ProgressFn,
    StopFn,
    TrainingCancelled,
    load_checkpoint,
    save_checkpoint,
)
from workers.training.rnn_eval import EVAL_STREAMS as EVAL_STREAMS  # re-exported
from workers.training.rnn_eval import evaluate_bpc, evaluate_probs, ngram_view, per_tag
from workers.training.rnn_export import export_onnx as export_onnx  # re-exported
from workers.training.rnn_export import export_text_generator
from workers.training.schedule import Schedule as Schedule  # re-exported
from workers.training.schedule import check_limits
from workers.training.text_data import (
    EOS as EOS,
)
from workers.training.text_data import (
    VOCAB_SIZE,
    bytes_only,
    documents,
    encode,
    epoch_rows,
    split_documents,
    stream_layout,
    tag_vocabulary,
)
from workers.training.text_data import encode_documents as encode_documents  # re-exported
from workers.training.text_data import split_texts as split_texts  # re-exported

CHECKPOINT_FILE = "text_generator.ckpt"
CHECKPOINT_FORMAT = 2


def _noop_progress(_: dict[str, Any]) -> None:
    return None


def _never_stop() -> bool:
    return False


@dataclass(frozen=True)
class RNNConfig:
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1
    seq_len: int = 128
    # Updates are what is scarce on 2 cores: small batches, a high rate (docs/text-generator.md).
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    val_fraction: float = 0.05
    max_val_bytes: int = 200_000
    ngram_order: int = 7
    # Share of tagged training documents shown without their tag, so the model also knows the
    # corpus as a whole (an untagged prompt) and per-tag figures have an unconditioned twin.
    tag_dropout: float = 0.2
    seed: int = 0


class CharGRU(nn.Module):
    def __init__(self, cfg: RNNConfig, n_tags: int = 0):
        super().__init__()
        # Inputs: 256 bytes and one control code per tag; outputs: bytes only.
        self.embed = nn.Embedding(VOCAB_SIZE + n_tags, cfg.embed)
        self.gru = nn.GRU(
            cfg.embed,
            cfg.hidden,
            cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.head = nn.Linear(cfg.hidden, VOCAB_SIZE)

    def forward(self, tokens: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, hn = self.gru(self.embed(tokens), h0)
        return self.head(out), hn


def _fingerprint(
    train: np.ndarray, val: np.ndarray, cfg: RNNConfig, epochs: int | None, budget_s: float | None
) -> str:
    h = hashlib.sha256()
    h.update(train.tobytes())
    h.update(val.tobytes())
    h.update(repr((asdict(cfg), epochs, budget_s)).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# training


def train_text_generator(
    texts: Sequence[str],
    models_dir: Path,
    name: str,
    version: str,
    *,
    tags: Sequence[str | None] | None = None,
    epochs: int | None = 3,
    budget_s: float | None = None,
    config: RNNConfig | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 200,
    log_every: int = 50,
    threads: int | None = None,
    license: str = "",
    attribution: str = "",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Train, export to ONNX, verify against torch, and publish ``<models_dir>/<name>/<version>``.

    ``tags`` (one per text, ``None`` for untagged) turn every tag on at least MIN_TAG_DOCS
    training documents into a control code the generator can be primed with. If
    ``checkpoint_dir`` holds a checkpoint of the same data and config, training resumes from it.
    ``should_stop`` is polled before every step; when it returns True the state is saved and
    :class:`TrainingCancelled` is raised. The checkpoint is removed once the model is published.
    Training stops after ``epochs`` passes or ``budget_s`` seconds, whichever comes first (at
    least one of them must be given).
    """
    cfg = config or RNNConfig()
    check_limits("epochs", epochs, budget_s)
    progress = progress or _noop_progress
    should_stop = should_stop or _never_stop
    if threads:
        torch.set_num_threads(threads)

    train_docs, val_docs = split_documents(documents(texts, tags), cfg.val_fraction, cfg.seed)
    tag_names = tag_vocabulary(train_docs)
    tag_ids = {t: i for i, t in enumerate(tag_names)}
    train = encode(train_docs, tag_ids, drop_tags=cfg.tag_dropout, seed=cfg.seed)
    val = encode(val_docs, tag_ids)[: cfg.max_val_bytes]
    if len(train) < cfg.seq_len + 2:
        raise ValueError(f"training text too short: {len(train)} bytes, need > {cfg.seq_len + 1}")
    fingerprint = _fingerprint(train, val, cfg, epochs, budget_s)

    torch.manual_seed(cfg.seed)
    model = CharGRU(cfg, len(tag_names))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rows, steps_per_epoch = stream_layout(len(train), cfg.batch_size, cfg.seq_len)
    total_steps = steps_per_epoch * epochs if epochs is not None else None
    schedule = Schedule(total_steps, budget_s)

    ckpt_path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir else None
    state = load_checkpoint(ckpt_path) if ckpt_path else None
    step, elapsed, history = 0, 0.0, []
    h = torch.zeros(cfg.layers, rows, cfg.hidden)
    best: dict[str, Any] = {"val_bpc": float("inf"), "model": None}
    if state is not None and state.get("fingerprint") == fingerprint:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step, elapsed, history = state["step"], state["elapsed"], list(state["history"])
        h = state["hidden"]
        best = {"val_bpc": state["best_val_bpc"], "model": state["best_model"]}
        progress({"event": "resumed", "step": step, "epoch": step // steps_per_epoch})
    elif state is not None:
        progress({"event": "checkpoint_ignored", "reason": "different data or config"})

    # Counted on every start, resumed or not: seconds for ~1 MB, and the server needs the tables.
    ngram = KneserNey.fit(bytes_only(train), cfg.ngram_order)
    # Scored on exactly the positions evaluate_probs scores, so the three figures compare.
    ngram_probs, context_counts = ngram_view(ngram, val, EVAL_STREAMS)
    ngram_bpc = bits(ngram_probs)
    progress(
        {
            "event": "start",
            "steps": total_steps,
            "budget_s": budget_s,
            "train_bytes": len(train),
            "val_bytes": len(val),
            "tags": tag_names,
            "ngram_val_bpc": ngram_bpc,
        }
    )

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optim": opt.state_dict(),
                "step": step,
                "elapsed": elapsed,
                "history": history,
                "hidden": h,
                "best_val_bpc": best["val_bpc"],
                "best_model": best["model"],
            },
            ckpt_path,
        )

    data = torch.from_numpy(train.astype(np.int64))
    targets = torch.where(data < VOCAB_SIZE, data, -100)  # control codes are never predicted
    offsets = torch.arange(cfg.seq_len + 1)
    model.train()
    t_last = time.perf_counter()
    loss_sum, loss_n = 0.0, 0

    def running() -> float:
        return elapsed + time.perf_counter() - t_last

    while not schedule.done(step, running()):
        epoch, in_epoch = divmod(step, steps_per_epoch)
        starts = torch.from_numpy(
            epoch_rows(len(train), cfg.batch_size, cfg.seq_len, cfg.seed, epoch)
        )
        if in_epoch == 0:
            h = torch.zeros(cfg.layers, rows, cfg.hidden)  # rows start elsewhere each epoch
        for b in range(in_epoch, steps_per_epoch):
            if b > in_epoch and schedule.done(step, running()):
                break
            if should_stop():
                elapsed += time.perf_counter() - t_last
                checkpoint()
                raise TrainingCancelled(step, ckpt_path or Path())
            # Dropout draws from the global RNG: seed it per step so a resume is reproducible.
            torch.manual_seed(cfg.seed * 1_000_003 + step)
            idx = (starts + b * cfg.seq_len).unsqueeze(1) + offsets
            for g in opt.param_groups:
                g["lr"] = schedule.lr(step, running(), cfg.lr)
            logits, h = model(data[idx[:, :-1]], h)
            h = h.detach()
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB_SIZE), targets[idx[:, 1:]].reshape(-1)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            step += 1
            loss_sum += loss.item()
            loss_n += 1
            if step % log_every == 0:
                progress(
                    {
                        "event": "step",
                        "epoch": epoch,
                        "step": step,
                        "steps": total_steps,
                        "fraction": schedule.fraction(step, running()),
                        "loss": loss_sum / loss_n,
                        "train_bpc": loss_sum / loss_n / math.log(2),
                    }
                )
                loss_sum, loss_n = 0.0, 0
            if ckpt_path is not None and step % checkpoint_every == 0:
                now = time.perf_counter()
                elapsed, t_last = elapsed + now - t_last, now
                checkpoint()
        now = time.perf_counter()
        elapsed, t_last = elapsed + now - t_last, now
        val_bpc = evaluate_bpc(model, val, cfg)
        if val_bpc < best["val_bpc"]:
            best = {"val_bpc": val_bpc, "model": copy.deepcopy(model.state_dict())}
        history.append({"epoch": len(history) + 1, "step": step, "val_bpc": val_bpc})
        progress(
            {
                "event": "epoch",
                "epoch": len(history),
                "step": step,
                "steps": total_steps,
                "fraction": schedule.fraction(step, elapsed),
                "val_bpc": val_bpc,
                "ngram_val_bpc": ngram_bpc,
                "elapsed_s": elapsed,
            }
        )
        t_last = time.perf_counter()
        checkpoint()

    if best["model"] is not None:
        model.load_state_dict(best["model"])
    model.eval()
    val_probs = evaluate_probs(model, val, cfg)
    # Served distribution: the RNN and the n-gram mixed, a weight per bucket of how often the
    # n-gram saw the context, fitted on these same bytes.
    gate = MixtureGate.fit(val_probs, ngram_probs, context_counts)
    _, fixed_bpc = best_mixture_weight(val_probs, ngram_probs)
    metrics = {
        "val_bpc": bits(val_probs),
        "ngram_val_bpc": ngram_bpc,
        "mixture_val_bpc": bits(gate.mix(val_probs, ngram_probs, context_counts)),
        "mixture_fixed_weight_val_bpc": fixed_bpc,
        "mixture_weight": gate.mean_weight,
        "mixture_gate": gate.to_json(),
        "ngram_baseline": f"interpolated modified Kneser-Ney byte {cfg.ngram_order}-gram, "
        "same split",
        "ngram_pruned_singletons_of_orders": ngram.pruned,
        "bpc_unit": "bits per UTF-8 byte",
        "tags": tag_names,
        "per_tag": per_tag(model, cfg, val_docs, tag_ids, ngram, gate),
        "history": history,
        "train_time_s": round(elapsed, 1),
        "train_seconds_per_epoch": round(elapsed / max(len(history), 1), 1),
        "epochs": len(history),
        "budget_s": budget_s,
        "steps": step,
        "corpus_texts": len(train_docs) + len(val_docs),
        "train_bytes": len(train),
        "val_bytes": len(val),
    }
    manifest = export_text_generator(
        model,
        cfg,
        models_dir,
        name,
        version,
        metrics=metrics,
        ngram=ngram,
        gate=gate,
        tags=tag_names,
        license=license,
        attribution=attribution,
        extra=extra,
        overwrite=overwrite,
    )
    if ckpt_path is not None:
        ckpt_path.unlink(missing_ok=True)
    return manifest
