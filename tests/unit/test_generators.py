"""Text and image generators: training hooks, ONNX export, serving. Tiny models on real data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shared.inference.manifest import read_manifest, write_manifest  # noqa: E402
from workers.generation import ngram  # noqa: E402
from workers.generation.image import ImageGenerator  # noqa: E402
from workers.generation.text import TextGenerator  # noqa: E402
from workers.training import gan, rnn  # noqa: E402
from workers.training.build.image_generator import load_openmoji  # noqa: E402
from workers.training.build.text_generator import load_fortunes  # noqa: E402

TINY_RNN = rnn.RNNConfig(embed=16, hidden=48, layers=2, seq_len=32, batch_size=16, lr=1e-2)
TINY_GAN = gan.GANConfig(ngf=8, ndf=8, batch_size=8, fid_samples=16)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fortunes() -> list[str]:
    return load_fortunes(limit=120)


@pytest.fixture(scope="module")
def icons() -> list[Any]:
    return load_openmoji(limit=16)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory, fortunes: list[str]) -> Path:
    models = tmp_path_factory.mktemp("models")
    rnn.train_text_generator(fortunes, models, "tg", "1", epochs=2, config=TINY_RNN)
    return models / "tg" / "1"


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory, icons: list[Any]) -> Path:
    models = tmp_path_factory.mktemp("models")
    gan.train_image_generator(icons, models, "ig", "1", steps=3, config=TINY_GAN)
    return models / "ig" / "1"


# --- text ---------------------------------------------------------------------------------------


def test_validation_bpc_decreases_and_baseline_is_reported(text_model: Path) -> None:
    gen = TextGenerator(text_model)
    m = gen.manifest.metrics
    first, last = m["history"][0]["val_bpc"], m["history"][-1]["val_bpc"]
    assert last < first < 8.0  # 8 bits per byte is the uniform distribution
    assert 1.0 < m["ngram_val_bpc"] < 8.0
    assert m["onnx_max_abs_diff"] < 1e-4
    assert gen.manifest.kind == "text_generator"


def test_text_onnx_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    assert rnn.export_onnx(rnn.CharGRU(TINY_RNN), TINY_RNN, tmp_path / "m.onnx") < 1e-4


def test_kneser_ney_is_normalised(fortunes: list[str]) -> None:
    train = rnn.encode_documents(fortunes)
    for ctx in (b"the ", b"\x00\x00\x00\x00", b"qzxj"):
        # One stream ctx+w for every byte w: P(w | ctx) sits at every 5th position.
        stream = np.frombuffer(b"".join(ctx + bytes([w]) for w in range(256)), np.uint8)
        probs = rnn.kneser_ney_probs(train, stream, 5)[4::5]
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)


def _split(fortunes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The train/validation bytes train_text_generator used for the ``text_model`` fixture."""
    train, val = rnn.split_texts(fortunes, TINY_RNN.val_fraction, TINY_RNN.seed)
    return rnn.encode_documents(train), rnn.encode_documents(val)


def _contexts(stream: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes before every position of ``stream``, left-padded with 0."""
    padded = np.concatenate([np.zeros(width, np.int64), stream.astype(np.int64)])
    return np.stack([padded[j : j + len(stream)] for j in range(width)], axis=1)


def test_served_ngram_is_the_trained_one(text_model: Path, fortunes: list[str]) -> None:
    # The exported tables, loaded as the server loads them, give a normalised distribution whose
    # value at the true next byte is what training scored at every validation position.
    train, val = _split(fortunes)
    served = ngram.KneserNey.load(text_model / ngram.NGRAM_FILE)
    dist = served.distribution(_contexts(val, served.order - 1))
    assert dist.shape == (len(val), 256)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-9)
    expected = rnn.kneser_ney_probs(train, val, TINY_RNN.ngram_order)
    np.testing.assert_allclose(dist[np.arange(len(val)), val], expected, rtol=0, atol=1e-6)


def test_mixture_bits_are_consistent(text_model: Path, fortunes: list[str]) -> None:
    gen = TextGenerator(text_model)
    m = gen.manifest.metrics
    lam = m["mixture_weight"]
    assert gen.manifest.extra["mixture"]["weight"] == lam
    assert m["ngram_pruned_singletons_of_orders"] == []
    # lam = 0 and 1 are candidates of the search, so the mixture is never worse than either.
    assert m["mixture_val_bpc"] <= min(m["val_bpc"], m["ngram_val_bpc"]) + 1e-12
    # On this fixture both models are weak in different ways: the mixture really mixes.
    assert 0.0 < lam < 1.0 and gen.ngram is not None
    # Recompute the three figures from the served files (ONNX RNN, n-gram npz) on the same bytes.
    _, val = _split(fortunes)
    streams, per = rnn._eval_layout(len(val), rnn.EVAL_STREAMS)
    x = val[: streams * per].astype(np.int64).reshape(streams, per)
    logits, _ = gen.step(x, np.zeros((gen.layers, streams, gen.hidden), np.float32))
    z = logits.reshape(-1, 256).astype(np.float64)
    p_all = np.exp(z - z.max(axis=1, keepdims=True))
    p_all /= p_all.sum(axis=1, keepdims=True)
    target = val[1 : streams * per + 1]
    p_rnn = p_all[np.arange(len(target)), target]
    p_ngram = gen.ngram.probs(val)[1 : streams * per + 1]
    assert ngram.bits(p_rnn) == pytest.approx(m["val_bpc"], abs=1e-4)
    assert ngram.bits(p_ngram) == pytest.approx(m["ngram_val_bpc"], abs=1e-9)
    mixed = ngram.bits(lam * p_rnn + (1 - lam) * p_ngram)
    assert mixed == pytest.approx(m["mixture_val_bpc"], abs=1e-4)
    for other in (0.0, 1.0, max(0.0, lam - 0.05), min(1.0, lam + 0.05)):
        assert mixed <= ngram.bits(other * p_rnn + (1 - other) * p_ngram) + 1e-4


def test_mixture_weight_search() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 1.0, 1000)
    q = rng.uniform(0.01, 1.0, 1000)
    lam, b = ngram.best_mixture_weight(p, q)
    grid = [ngram.bits(t * p + (1 - t) * q) for t in np.linspace(0, 1, 201)]
    assert b <= min(grid) + 1e-9 and b == pytest.approx(ngram.bits(lam * p + (1 - lam) * q))
    # A model that is better at every position takes all the weight.
    assert ngram.best_mixture_weight(p, p / 2)[0] == 1.0
    assert ngram.best_mixture_weight(p / 2, p)[0] == 0.0


def _table_bytes(model: ngram.KneserNey) -> int:
    return sum(lv.codes.nbytes + lv.counts.nbytes for lv in model.levels)


def test_ngram_prunes_singletons_to_fit_its_size_limit(fortunes: list[str]) -> None:
    train, val = _split(fortunes)
    full = ngram.KneserNey.fit(train, 5)
    small = ngram.KneserNey.fit(train, 5, max_bytes=_table_bytes(full) - 1)
    assert full.pruned == [] and small.pruned == [5]
    assert len(small.levels[4].codes) < len(full.levels[4].codes)
    assert all(
        len(a.codes) == len(b.codes) for a, b in zip(small.levels[:4], full.levels[:4], strict=True)
    )
    dist = small.distribution(_contexts(val, 4)[:200])
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-9)
    assert ngram.bits(small.probs(val)) < 8.0


def test_model_without_ngram_still_generates(text_model: Path, tmp_path: Path) -> None:
    # A version published before the mixture existed: no n-gram file, no mixture entry.
    old = tmp_path / "old"
    old.mkdir()
    for f in ("model.onnx", "manifest.json"):
        (old / f).write_bytes((text_model / f).read_bytes())
    manifest = read_manifest(old)
    extra = {k: v for k, v in manifest.extra.items() if k != "mixture"}
    write_manifest(old, manifest.model_copy(update={"extra": extra}))
    gen = TextGenerator(old)
    assert gen.ngram is None and gen.mixture_weight == 1.0
    a = gen.generate("The ", n=3, seed=7, max_length=30)
    assert a == gen.generate("The ", n=3, seed=7, max_length=30)
    # The mixture changes what is sampled, so the two models really differ.
    assert a != TextGenerator(text_model).generate("The ", n=3, seed=7, max_length=30)


def test_generate_shapes_and_determinism(text_model: Path) -> None:
    gen = TextGenerator(text_model)
    assert gen.ngram is not None  # sampling from the RNN + n-gram mixture
    a = gen.generate("The ", n=4, seed=7, max_length=30)
    assert len(a) == 4 and all(len(s.encode()) <= 30 for s in a)
    assert a == gen.generate("The ", n=4, seed=7, max_length=30)
    assert a != gen.generate("The ", n=4, seed=8, max_length=30)
    greedy = gen.generate("A", temperature=0.0, max_length=20, n=2)
    assert greedy[0] == greedy[1]
    filtered = gen.generate("A", top_k=3, top_p=0.8, temperature=0.7, seed=1, max_length=20)
    assert len(filtered) == 1


def test_stop_strings_cut_the_text(text_model: Path) -> None:
    gen = TextGenerator(text_model)
    for s in gen.generate("", n=8, seed=3, max_length=80, stop=["e"]):
        assert "e" not in s


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 65},
        {"max_length": 0},
        {"max_length": True},
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"seed": -1},
        {"stop": [""]},
        {"stop": "x"},
    ],
)
def test_generate_rejects_bad_arguments(text_model: Path, kwargs: dict[str, Any]) -> None:
    gen = TextGenerator(text_model)
    with pytest.raises(ValueError):
        gen.generate("x", **kwargs)


def test_text_cancel_then_resume(tmp_path: Path, fortunes: list[str]) -> None:
    calls = {"n": 0}

    def stop_after_5() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    ckpt = tmp_path / "ckpt"
    with pytest.raises(rnn.TrainingCancelled) as info:
        rnn.train_text_generator(
            fortunes[:40], tmp_path, "tg", "1", epochs=1, config=TINY_RNN,
            should_stop=stop_after_5, checkpoint_dir=ckpt,
        )  # fmt: skip
    assert info.value.step == 5
    assert (ckpt / rnn.CHECKPOINT_FILE).is_file()
    assert not (tmp_path / "tg" / "1").exists()

    events: list[dict[str, Any]] = []
    manifest = rnn.train_text_generator(
        fortunes[:40], tmp_path, "tg", "1", epochs=1, config=TINY_RNN,
        progress=events.append, checkpoint_dir=ckpt, log_every=1,
    )  # fmt: skip
    assert events[0] == {"event": "resumed", "step": 5, "epoch": 0}
    steps = [e["step"] for e in events if e.get("event") == "step"]
    assert steps[0] == 6 and steps[-1] == manifest.metrics["steps"]
    assert not (ckpt / rnn.CHECKPOINT_FILE).exists()


def test_text_training_stops_at_its_time_budget(tmp_path: Path, fortunes: list[str]) -> None:
    fractions: list[float] = []

    def seen(event: dict[str, Any]) -> None:
        if event.get("fraction") is not None:
            fractions.append(event["fraction"])

    manifest = rnn.train_text_generator(
        fortunes[:40], tmp_path, "tg", "1", epochs=None, budget_s=1.5, config=TINY_RNN,
        progress=seen, log_every=1,
    )  # fmt: skip
    m = manifest.metrics
    # No epoch cap: only the budget can have ended it, and it ended once the budget was spent.
    assert m["budget_s"] == 1.5 and m["train_time_s"] >= 1.4 and m["steps"] > 0
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert m["history"][-1]["step"] == m["steps"]


def test_schedule_ends_at_whichever_limit_comes_first() -> None:
    both = rnn.Schedule(total_steps=100, budget_s=10.0)
    assert not both.done(50, 4.0) and both.done(100, 1.0) and both.done(10, 10.0)
    assert both.fraction(50, 8.0) == 0.8
    cfg = rnn.RNNConfig(lr=1.0)
    # Warm-up, then a cosine that reaches 10% of the rate exactly when the budget is spent.
    by_time = rnn.Schedule(total_steps=None, budget_s=10.0)
    assert by_time.lr(0, 0.0, cfg) < by_time.lr(99, 0.5, cfg)
    assert by_time.lr(500, 10.0, cfg) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="epochs, budget_s"):
        rnn.train_text_generator(["a b", "c d"], Path("."), "x", "1", epochs=None)


# --- images -------------------------------------------------------------------------------------


def test_image_generator_shapes_metrics_and_determinism(image_model: Path) -> None:
    gen = ImageGenerator(image_model)
    m = gen.manifest.metrics
    assert m["onnx_max_abs_diff"] < 1e-4
    for key in ("fid", "fid_uniform_noise", "fid_pixel_gaussian", "fid_real_train"):
        assert np.isfinite(m[key])
    assert m["fid_embedding"].startswith("fallback")
    images = gen.generate(5, seed=11)
    assert len(images) == 5 and all(im.size == (64, 64) and im.mode == "RGB" for im in images)
    again = gen.generate(8, seed=11)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again[:5], strict=True)
    )
    assert not np.array_equal(np.asarray(images[0]), np.asarray(gen.generate(1, seed=12)[0]))


def test_truncation_bounds_latents(image_model: Path) -> None:
    gen = ImageGenerator(image_model)
    z = gen.latents(16, seed=2, truncation=0.5)
    assert z.shape == (16, 100) and np.abs(z).max() <= 0.5


def test_interpolation_ends_at_the_seeds(image_model: Path) -> None:
    gen = ImageGenerator(image_model)
    path = gen.interpolate(3, 4, 5)
    assert len(path) == 5
    assert np.array_equal(np.asarray(path[0]), np.asarray(gen.generate(1, seed=3)[0]))
    assert np.array_equal(np.asarray(path[-1]), np.asarray(gen.generate(1, seed=4)[0]))


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        ("generate", {"n": 0, "seed": 1}),
        ("generate", {"n": 65, "seed": 1}),
        ("generate", {"n": 2, "seed": -1}),
        ("generate", {"n": 2, "seed": 1, "truncation": 0.0}),
        ("interpolate", {"seed_a": 1, "seed_b": 2, "steps": 1}),
        ("interpolate", {"seed_a": 1, "seed_b": 2, "steps": 65}),
    ],
)
def test_image_generator_rejects_bad_arguments(
    image_model: Path, call: str, kwargs: dict[str, Any]
) -> None:
    gen = ImageGenerator(image_model)
    with pytest.raises(ValueError):
        getattr(gen, call)(**kwargs)


def test_image_onnx_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = gan.Generator(100, 8)
    g.apply(gan._init_weights)
    assert gan.export_onnx(g, tmp_path / "g.onnx") < 1e-4


def test_gan_cancel_then_resume(tmp_path: Path, icons: list[Any]) -> None:
    calls = {"n": 0}

    def stop_after_2() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    ckpt = tmp_path / "ckpt"
    with pytest.raises(gan.TrainingCancelled) as info:
        gan.train_image_generator(
            icons, tmp_path, "ig", "1", steps=4, config=TINY_GAN,
            should_stop=stop_after_2, checkpoint_dir=ckpt,
        )  # fmt: skip
    assert info.value.step == 2 and (ckpt / gan.CHECKPOINT_FILE).is_file()
    events: list[dict[str, Any]] = []
    manifest = gan.train_image_generator(
        icons, tmp_path, "ig", "1", steps=4, config=TINY_GAN,
        progress=events.append, checkpoint_dir=ckpt, log_every=1,
    )  # fmt: skip
    assert events[0] == {"event": "resumed", "step": 2}
    assert [e["step"] for e in events if e.get("event") == "step"] == [3, 4]
    assert manifest.metrics["steps"] == 4


def test_frechet_distance() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 8))
    assert gan.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert gan.frechet_distance(a, a + 2.0) == pytest.approx(4.0 * 8, rel=1e-6)


def test_corpus_smaller_than_one_batch_still_trains(tmp_path: Path) -> None:
    from workers.training.rnn import RNNConfig, _batches_for_epoch

    cfg = RNNConfig(seq_len=16, batch_size=32)
    batches = _batches_for_epoch(200, cfg, epoch=0)
    assert batches.shape == (1, 32)
    assert batches.max() <= 200 - (cfg.seq_len + 1)
