"""Train a byte-level GRU language model and publish it as an ONNX ``text_generator``.

The model reads UTF-8 bytes (vocabulary 256, so any prompt can be encoded and no vocabulary file
can drift from the weights). Byte 0 separates documents: it starts every document and ends it, so
the server primes a prompt after a 0 and stops a sample when the model emits one.

Quality is reported as validation bits per byte (``val_bpc``; equal to bits per character on the
ASCII corpora we ship) next to an interpolated Kneser-Ney byte 5-gram fitted on the same training
split and scored on the same validation bytes, so a number means something on its own. The
served model mixes the two: ``lam * P_rnn + (1 - lam) * P_ngram`` with lam chosen on validation
(``mixture_weight``, ``mixture_val_bpc``); the n-gram tables ship beside the ONNX file (see
workers/generation/ngram.py and docs/text-generator.md).

``train_text_generator`` is a plain function for the Celery training task: progress, cancellation
and checkpoint/resume are hooks, and nothing here touches the database or the broker.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.inference.manifest import Manifest, publish_model_dir, write_manifest
from workers.generation.ngram import (
    NGRAM_FILE,
    NGRAM_FORMAT,
    KneserNey,
    best_mixture_weight,
    bits,
)
from workers.generation.ngram import kneser_ney_bpc as kneser_ney_bpc  # re-exported
from workers.generation.ngram import kneser_ney_probs as kneser_ney_probs  # re-exported
from workers.training.checkpoints import (
    ProgressFn,
    StopFn,
    TrainingCancelled,
    load_checkpoint,
    save_checkpoint,
)

EOS = 0
VOCAB_SIZE = 256
CHECKPOINT_FILE = "text_generator.ckpt"
CHECKPOINT_FORMAT = 1
EVAL_STREAMS = 16


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
    # On the fortunes, 240 steps of 32 x 128 bytes at lr 5e-3 reached 3.07 val bpc against 3.75
    # for 120 steps of 64 x 128 at 2e-3 (same bytes, same CPU time): updates are what is scarce.
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    val_fraction: float = 0.05
    max_val_bytes: int = 200_000
    ngram_order: int = 5
    seed: int = 0


class CharGRU(nn.Module):
    def __init__(self, cfg: RNNConfig):
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, cfg.embed)
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


# ---------------------------------------------------------------------------------------------
# data


def encode_documents(texts: Sequence[str]) -> np.ndarray:
    """One byte stream: 0, doc, 0, doc, ..., 0 (NUL inside a text would fake a boundary)."""
    parts = [b"\x00"]
    for t in texts:
        parts.append(t.replace("\x00", "").encode("utf-8"))
        parts.append(b"\x00")
    return np.frombuffer(b"".join(parts), dtype=np.uint8).copy()


def split_texts(
    texts: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split whole documents, so no validation text is half seen in training."""
    docs = [t for t in texts if t.strip()]
    if len(docs) < 2:
        raise ValueError("need at least 2 non-empty texts (one for validation)")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    val = [docs[i] for i in sorted(order[:n_val])]
    train = [docs[i] for i in sorted(order[n_val:])]
    return train, val


# ---------------------------------------------------------------------------------------------
# training


def _batches_for_epoch(n_bytes: int, cfg: RNNConfig, epoch: int) -> np.ndarray:
    """Start offsets of every batch in one epoch; a pure function of (seed, epoch) so a resumed
    run replays exactly the batches the dead worker would have seen."""
    span = cfg.seq_len + 1
    rng = np.random.default_rng([cfg.seed, epoch])
    shift = int(rng.integers(0, cfg.seq_len))
    starts = np.arange(shift, n_bytes - span + 1, cfg.seq_len)
    if len(starts) == 0:
        starts = np.array([0])
    rng.shuffle(starts)
    if len(starts) < cfg.batch_size:
        # A corpus smaller than one batch: fill the batch by drawing windows again.
        starts = rng.choice(starts, size=cfg.batch_size, replace=True)
    n_batches = max(1, len(starts) // cfg.batch_size)
    return starts[: n_batches * cfg.batch_size].reshape(n_batches, cfg.batch_size)


def _eval_layout(n_bytes: int, streams: int) -> tuple[int, int]:
    """(streams, bytes per stream) of an evaluation: it scores positions 1 .. streams * per."""
    streams = max(1, min(streams, (n_bytes - 1) // 2))
    return streams, (n_bytes - 1) // streams


@torch.no_grad()
def evaluate_probs(
    model: CharGRU, stream: np.ndarray, cfg: RNNConfig, streams: int = EVAL_STREAMS
) -> np.ndarray:
    """P(true next byte) at positions 1 .. streams * per of ``stream`` (see :func:`_eval_layout`),
    the hidden state carried across chunks (no cold start per chunk)."""
    model.eval()
    data = torch.from_numpy(stream.astype(np.int64))
    streams, per = _eval_layout(len(data), streams)
    x_all = data[: per * streams].view(streams, per)
    y_all = data[1 : per * streams + 1].view(streams, per)
    h = torch.zeros(cfg.layers, streams, cfg.hidden)
    logp = torch.empty(streams, per)
    chunk = 256
    for i in range(0, per, chunk):
        logits, h = model(x_all[:, i : i + chunk], h)
        y = y_all[:, i : i + chunk]
        logp[:, i : i + chunk] = logits.log_softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    model.train()
    # Row-major: stream r covers positions r * per + 1 .., so the flat order is the byte order.
    return np.exp(logp.numpy().astype(np.float64).reshape(-1))


def evaluate_bpc(
    model: CharGRU, stream: np.ndarray, cfg: RNNConfig, streams: int = EVAL_STREAMS
) -> float:
    """Bits per byte of :func:`evaluate_probs`."""
    return bits(evaluate_probs(model, stream, cfg, streams))


def _fingerprint(
    train: np.ndarray, val: np.ndarray, cfg: RNNConfig, epochs: int | None, budget_s: float | None
) -> str:
    h = hashlib.sha256()
    h.update(train.tobytes())
    h.update(val.tobytes())
    h.update(repr((asdict(cfg), epochs, budget_s)).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Schedule:
    """When training ends: after ``total_steps`` (an epoch cap), after ``budget_s`` seconds of
    training, or whichever comes first. The learning rate follows whichever is nearer its end,
    so a run cut by its budget still finishes its decay."""

    total_steps: int | None
    budget_s: float | None

    def fraction(self, step: int, elapsed: float) -> float:
        by_steps = step / self.total_steps if self.total_steps else 0.0
        by_time = elapsed / self.budget_s if self.budget_s else 0.0
        return min(1.0, max(by_steps, by_time))

    def done(self, step: int, elapsed: float) -> bool:
        return self.fraction(step, elapsed) >= 1.0

    def lr(self, step: int, elapsed: float, cfg: RNNConfig) -> float:
        # Short warm-up then cosine to 10%: a constant rate leaves ~0.05 bpc on the table.
        warm = min(100, max(1, self.total_steps // 20)) if self.total_steps else 100
        if step < warm:
            return cfg.lr * (step + 1) / warm
        t = self.fraction(step, elapsed)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_text_generator(
    texts: Sequence[str],
    models_dir: Path,
    name: str,
    version: str,
    *,
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

    If ``checkpoint_dir`` holds a checkpoint of the same data and config, training resumes from
    it. ``should_stop`` is polled before every step; when it returns True the state is saved and
    :class:`TrainingCancelled` is raised. The checkpoint is removed once the model is published.
    Training stops after ``epochs`` passes or ``budget_s`` seconds, whichever comes first (at
    least one of them must be given).
    """
    cfg = config or RNNConfig()
    if epochs is None and budget_s is None:
        raise ValueError("give epochs, budget_s or both")
    if epochs is not None and epochs < 1:
        raise ValueError("epochs must be >= 1")
    if budget_s is not None and budget_s <= 0:
        raise ValueError("budget_s must be positive")
    progress = progress or _noop_progress
    should_stop = should_stop or _never_stop
    if threads:
        torch.set_num_threads(threads)

    train_texts, val_texts = split_texts(texts, cfg.val_fraction, cfg.seed)
    train = encode_documents(train_texts)
    val = encode_documents(val_texts)[: cfg.max_val_bytes]
    if len(train) < cfg.seq_len + 2:
        raise ValueError(f"training text too short: {len(train)} bytes, need > {cfg.seq_len + 1}")
    fingerprint = _fingerprint(train, val, cfg, epochs, budget_s)

    torch.manual_seed(cfg.seed)
    model = CharGRU(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(_batches_for_epoch(len(train), cfg, 0))
    total_steps = steps_per_epoch * epochs if epochs is not None else None
    schedule = Schedule(total_steps, budget_s)

    ckpt_path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir else None
    state = load_checkpoint(ckpt_path) if ckpt_path else None
    step, elapsed, history = 0, 0.0, []
    if state is not None and state.get("fingerprint") == fingerprint:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step, elapsed, history = state["step"], state["elapsed"], list(state["history"])
        progress({"event": "resumed", "step": step, "epoch": step // steps_per_epoch})
    elif state is not None:
        progress({"event": "checkpoint_ignored", "reason": "different data or config"})

    # Counted on every start, resumed or not: seconds for ~1 MB, and the server needs the tables.
    ngram = KneserNey.fit(train, cfg.ngram_order)
    streams, per = _eval_layout(len(val), EVAL_STREAMS)
    # Scored on exactly the positions evaluate_probs scores, so the three figures compare.
    ngram_probs = ngram.probs(val)[1 : streams * per + 1]
    ngram_bpc = bits(ngram_probs)
    val_probs: np.ndarray | None = None
    progress(
        {
            "event": "start",
            "steps": total_steps,
            "budget_s": budget_s,
            "train_bytes": len(train),
            "val_bytes": len(val),
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
            },
            ckpt_path,
        )

    data = torch.from_numpy(train.astype(np.int64))
    offsets = torch.arange(cfg.seq_len + 1)
    h0 = torch.zeros(cfg.layers, cfg.batch_size, cfg.hidden)
    model.train()
    t_last = time.perf_counter()
    loss_sum, loss_n = 0.0, 0

    def running() -> float:
        return elapsed + time.perf_counter() - t_last

    while not schedule.done(step, running()):
        epoch, in_epoch = divmod(step, steps_per_epoch)
        batches = _batches_for_epoch(len(train), cfg, epoch)
        for b in range(in_epoch, steps_per_epoch):
            if b > in_epoch and schedule.done(step, running()):
                break
            if should_stop():
                elapsed += time.perf_counter() - t_last
                checkpoint()
                raise TrainingCancelled(step, ckpt_path or Path())
            # Dropout draws from the global RNG: seed it per step so a resume is reproducible.
            torch.manual_seed(cfg.seed * 1_000_003 + step)
            idx = torch.from_numpy(batches[b]).unsqueeze(1) + offsets
            xy = data[idx]
            for g in opt.param_groups:
                g["lr"] = schedule.lr(step, running(), cfg)
            logits, _ = model(xy[:, :-1], h0[:, : xy.shape[0]])
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB_SIZE), xy[:, 1:].reshape(-1)
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
        val_probs = evaluate_probs(model, val, cfg)
        val_bpc = bits(val_probs)
        history.append({"epoch": epoch + 1, "step": step, "val_bpc": val_bpc})
        progress(
            {
                "event": "epoch",
                "epoch": epoch + 1,
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

    if val_probs is None:  # resumed from a checkpoint written after the last epoch
        val_probs = evaluate_probs(model, val, cfg)
    # Served distribution: lam * P_rnn + (1 - lam) * P_ngram, lam fitted on these same bytes.
    mixture_weight, mixture_bpc = best_mixture_weight(val_probs, ngram_probs)
    metrics = {
        "val_bpc": bits(val_probs),
        "ngram_val_bpc": ngram_bpc,
        "mixture_val_bpc": mixture_bpc,
        "mixture_weight": mixture_weight,
        "ngram_baseline": f"interpolated Kneser-Ney byte {cfg.ngram_order}-gram, same split",
        "ngram_pruned_singletons_of_orders": ngram.pruned,
        "bpc_unit": "bits per UTF-8 byte",
        "history": history,
        "train_time_s": round(elapsed, 1),
        "train_seconds_per_epoch": round(elapsed / max(len(history), 1), 1),
        "epochs": len(history),
        "budget_s": budget_s,
        "steps": step,
        "corpus_texts": len(train_texts) + len(val_texts),
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
        mixture_weight=mixture_weight,
        license=license,
        attribution=attribution,
        extra=extra,
        overwrite=overwrite,
    )
    if ckpt_path is not None:
        ckpt_path.unlink(missing_ok=True)
    return manifest


# ---------------------------------------------------------------------------------------------
# export


def export_onnx(model: CharGRU, cfg: RNNConfig, path: Path) -> float:
    """Export with the legacy exporter (native ONNX GRU op) and return max |onnx - torch|."""
    import onnxruntime as ort

    model = model.eval()
    tokens = torch.zeros(2, 8, dtype=torch.long)
    h0 = torch.zeros(cfg.layers, 2, cfg.hidden)
    with warnings.catch_warnings():
        # The exporter warns about GRU batch sizes unless h0 is an input; here it is one.
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        # Shape checks inside nn.GRU become trace constants; the dynamic axes cover them.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # The legacy exporter is chosen on purpose (native GRU op); its deprecation is known.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (tokens, h0),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["tokens", "h0"],
            output_names=["logits", "hn"],
            dynamic_axes={
                "tokens": {0: "batch", 1: "seq"},
                "h0": {1: "batch"},
                "logits": {0: "batch", 1: "seq"},
                "hn": {1: "batch"},
            },
        )
    # A different batch and length than the trace, so the dynamic axes are exercised too.
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB_SIZE, (3, 17), generator=g)
    h0 = torch.randn(cfg.layers, 3, cfg.hidden, generator=g) * 0.5
    with torch.no_grad():
        ref_logits, ref_h = model(tokens, h0)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out_logits, out_h = sess.run(None, {"tokens": tokens.numpy(), "h0": h0.numpy()})
    return float(
        max(np.abs(out_logits - ref_logits.numpy()).max(), np.abs(out_h - ref_h.numpy()).max())
    )


def export_text_generator(
    model: CharGRU,
    cfg: RNNConfig,
    models_dir: Path,
    name: str,
    version: str,
    *,
    metrics: dict[str, Any],
    ngram: KneserNey | None = None,
    mixture_weight: float = 1.0,
    license: str = "",
    attribution: str = "",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Manifest:
    with publish_model_dir(models_dir, name, version, overwrite=overwrite) as tmp:
        diff = export_onnx(model, cfg, tmp / "model.onnx")
        if not diff < 1e-4:
            raise RuntimeError(f"ONNX export differs from torch by {diff:.2e} (limit 1e-4)")
        mixture: dict[str, Any] = {"weight": 1.0}  # no n-gram: the RNN alone
        if ngram is not None:
            ngram.save(tmp / NGRAM_FILE)
            mixture = {
                "weight": mixture_weight,
                "ngram_file": NGRAM_FILE,
                "ngram_format": NGRAM_FORMAT,
                **ngram.describe(),
            }
        manifest = Manifest(
            name=name,
            version=version,
            kind="text_generator",
            inputs=["tokens[batch,seq] int64", f"h0[{cfg.layers},batch,{cfg.hidden}] float32"],
            outputs=[
                "logits[batch,seq,256] float32",
                f"hn[{cfg.layers},batch,{cfg.hidden}] float32",
            ],
            preprocessing={"tokenizer": "utf-8 bytes", "vocab_size": VOCAB_SIZE, "eos": EOS},
            metrics={**metrics, "onnx_max_abs_diff": diff},
            extra={
                **(extra or {}),
                "architecture": "byte GRU LM",
                "layers": cfg.layers,
                "hidden": cfg.hidden,
                "config": asdict(cfg),
                "mixture": mixture,
            },
            license=license,
            attribution=attribution,
        )
        return write_manifest(tmp, manifest)
