"""Export the text generator to ONNX, check it against torch, and publish it with its n-gram."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shared.inference.manifest import Manifest, publish_model_dir, write_manifest
from workers.generation.mixture import MixtureGate
from workers.generation.ngram import NGRAM_FILE, NGRAM_FORMAT, KneserNey
from workers.training.text_data import EOS, VOCAB_SIZE

if TYPE_CHECKING:
    from workers.training.rnn import CharGRU, RNNConfig


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
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]  # public, not re-exported
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
    # A different batch and length than the trace, so the dynamic axes are exercised too; the
    # control codes (if any) are among the tokens, so their embeddings are checked as well.
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, model.embed.num_embeddings, (3, 17), generator=g)
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
    gate: MixtureGate | None = None,
    tags: list[str] | None = None,
    license: str = "",
    attribution: str = "",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Manifest:
    tags = tags or []
    with publish_model_dir(models_dir, name, version, overwrite=overwrite) as tmp:
        diff = export_onnx(model, cfg, tmp / "model.onnx")
        if not diff < 1e-4:
            raise RuntimeError(f"ONNX export differs from torch by {diff:.2e} (limit 1e-4)")
        mixture: dict[str, Any] = {"weight": 1.0}  # no n-gram: the RNN alone
        if ngram is not None and gate is not None:
            ngram.save(tmp / NGRAM_FILE)
            mixture = {
                # Servers that predate the gate read this single weight.
                "weight": gate.mean_weight,
                "gate": gate.to_json(),
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
            preprocessing={
                "tokenizer": "utf-8 bytes",
                "vocab_size": VOCAB_SIZE,
                "eos": EOS,
                # A sample with tag t is primed with token 256 + tags.index(t) instead of EOS.
                "tags": tags,
            },
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
