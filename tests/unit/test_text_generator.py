"""Text generator: training hooks, control codes, n-gram, gated mixture, ONNX export, serving.

Tiny models on real data: the FreeBSD fortunes, tagged by the file each comes from.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shared.inference.manifest import read_manifest, write_manifest  # noqa: E402
from workers.generation import mixture, ngram  # noqa: E402
from workers.generation.text import TextGenerator  # noqa: E402
from workers.training import rnn, text_data  # noqa: E402
from workers.training.build.text_generator import load_tagged_fortunes  # noqa: E402

# Small enough for seconds, big enough that the control codes measurably help (about 0.01 bits).
TINY_RNN = rnn.RNNConfig(embed=16, hidden=96, layers=1, seq_len=32, batch_size=16, lr=2e-2)
TAGS = ("startrek", "zippy")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tagged() -> list[tuple[str, str]]:
    return load_tagged_fortunes(TAGS, per_file=300)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory, tagged: list[tuple[str, str]]) -> Path:
    models = tmp_path_factory.mktemp("models")
    texts, tags = [t for t, _ in tagged], [g for _, g in tagged]
    cfg = TINY_RNN
    rnn.train_text_generator(texts, models, "tg", "1", tags=tags, epochs=6, config=cfg)
    return models / "tg" / "1"


def _split(tagged: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """The n-gram's train/validation bytes of the ``text_model`` fixture (no control codes)."""
    docs = text_data.documents([t for t, _ in tagged], [g for _, g in tagged])
    train, val = text_data.split_documents(docs, TINY_RNN.val_fraction, TINY_RNN.seed)
    ids = {t: i for i, t in enumerate(text_data.tag_vocabulary(train))}
    return (
        text_data.bytes_only(text_data.encode(train, ids, drop_tags=TINY_RNN.tag_dropout)),
        text_data.bytes_only(text_data.encode(val, ids)),
    )


def _contexts(stream: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes before every position of ``stream``, left-padded with 0."""
    padded = np.concatenate([np.zeros(width, np.int64), stream.astype(np.int64)])
    return np.stack([padded[j : j + len(stream)] for j in range(width)], axis=1)


# --- data ---------------------------------------------------------------------------------------


def test_tagged_documents_start_with_their_control_code() -> None:
    docs = [text_data.Document("ab", "x"), text_data.Document("c"), text_data.Document("de", "y")]
    stream = text_data.encode(docs, {"x": 0, "y": 1})
    assert stream.tolist() == [0, 256, 97, 98, 0, 99, 0, 257, 100, 101, 0]
    # The n-gram reads the same documents without the codes; no code is ever a target.
    assert text_data.bytes_only(stream).tolist() == [0, 97, 98, 0, 99, 0, 100, 101, 0]
    assert text_data.scored(stream).tolist() == [2, 3, 4, 5, 6, 8, 9, 10]
    dropped = text_data.encode(docs * 50, {"x": 0, "y": 1}, drop_tags=0.5, seed=1)
    assert 0.3 < (dropped >= 256).sum() / 100 < 0.7


def test_tag_vocabulary_needs_enough_documents() -> None:
    docs = [text_data.Document("t", "common")] * text_data.MIN_TAG_DOCS
    docs += [text_data.Document("t", "rare")] * (text_data.MIN_TAG_DOCS - 1)
    assert text_data.tag_vocabulary(docs) == ["common"]


def test_rows_cover_the_stream_and_shift_per_epoch() -> None:
    n, batch, seq = 10_000, 8, 32
    rows, steps = text_data.stream_layout(n, batch, seq)
    assert rows == batch
    for epoch in range(4):
        starts = text_data.epoch_rows(n, batch, seq, seed=0, epoch=epoch)
        # The last step of the last row reads seq + 1 tokens and stays inside the stream.
        assert starts[-1] + steps * seq + 1 <= n and (np.diff(starts) == steps * seq).all()
    shifts = {int(text_data.epoch_rows(n, batch, seq, 0, e)[0]) for e in range(8)}
    assert len(shifts) > 1
    # A corpus smaller than one batch of rows still gets one row of one step.
    assert text_data.stream_layout(40, 32, 16) == (2, 1)


# --- n-gram ---------------------------------------------------------------------------------------


def test_kneser_ney_is_normalised(tagged: list[tuple[str, str]]) -> None:
    train = rnn.encode_documents([t for t, _ in tagged])
    for ctx in (b"the ", b"\x00\x00\x00\x00", b"qzxj"):
        # One stream ctx+w for every byte w: P(w | ctx) sits at every 5th position.
        stream = np.frombuffer(b"".join(ctx + bytes([w]) for w in range(256)), np.uint8)
        probs = rnn.kneser_ney_probs(train, stream, 5)[4::5]
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)


def test_modified_discounts_beat_one_discount() -> None:
    # Enough text for the counts-of-counts to mean something (a few hundred KB).
    docs = text_data.documents([t for t, _ in load_tagged_fortunes(per_file=600)])
    train_docs, val_docs = text_data.split_documents(docs, 0.05, 0)
    train, val = text_data.encode(train_docs), text_data.encode(val_docs)
    modified = ngram.KneserNey.fit(train, 5)
    assert all(len(lv.discounts) == 3 for lv in modified.levels)
    single = ngram.KneserNey.fit(train, 5)
    for lv in single.levels:
        n1, n2 = np.sum(lv.counts == 1), np.sum(lv.counts == 2)
        lv.discounts = np.full(3, n1 / (n1 + 2 * n2))
        lv.__post_init__()
    single = ngram.KneserNey(single.levels)
    assert mixture.bits(modified.probs(val)) < mixture.bits(single.probs(val))


def test_served_ngram_is_the_trained_one(text_model: Path, tagged: list[tuple[str, str]]) -> None:
    # The exported tables, loaded as the server loads them, give a normalised distribution whose
    # value at the true next byte is what training scored at every validation position.
    train, val = _split(tagged)
    served = ngram.KneserNey.load(text_model / ngram.NGRAM_FILE)
    assert served.order == TINY_RNN.ngram_order
    dist = served.distribution(_contexts(val, served.order - 1))
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-9)
    expected = rnn.kneser_ney_probs(train, val, TINY_RNN.ngram_order)
    np.testing.assert_allclose(dist[np.arange(len(val)), val], expected, rtol=0, atol=1e-6)
    counts = served.served_context_counts(_contexts(val, served.order - 1))
    np.testing.assert_array_equal(counts, served.context_counts(val))


def test_format_1_ngram_files_still_load(tagged: list[tuple[str, str]], tmp_path: Path) -> None:
    train, val = _split(tagged)
    model = ngram.KneserNey.fit(train, 4)
    model.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as z:
        arrays = {k: z[k] for k in z.files}
    # A file of the first format: one discount per order.
    arrays["format"], arrays["discounts"] = np.array(1), np.array([0.5, 0.6, 0.7, 0.8])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    (tmp_path / "old.npz").write_bytes(buf.getvalue())
    old = ngram.KneserNey.load(tmp_path / "old.npz")
    assert [lv.discounts.tolist() for lv in old.levels][1] == [0.6, 0.6, 0.6]
    dist = old.distribution(_contexts(val, 3)[:100])
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-9)


def _table_bytes(model: ngram.KneserNey) -> int:
    return sum(lv.codes.nbytes + lv.counts.nbytes for lv in model.levels)


def test_ngram_prunes_singletons_to_fit_its_size_limit(tagged: list[tuple[str, str]]) -> None:
    train, val = _split(tagged)
    full = ngram.KneserNey.fit(train, 5)
    small = ngram.KneserNey.fit(train, 5, max_bytes=_table_bytes(full) - 1)
    assert full.pruned == [] and small.pruned == [5]
    assert len(small.levels[4].codes) < len(full.levels[4].codes)
    dist = small.distribution(_contexts(val, 4)[:200])
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-9)
    assert mixture.bits(small.probs(val)) < 8.0


# --- mixture --------------------------------------------------------------------------------------


def test_mixture_weight_search() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 1.0, 1000)
    q = rng.uniform(0.01, 1.0, 1000)
    lam, b = mixture.best_mixture_weight(p, q)
    grid = [mixture.bits(t * p + (1 - t) * q) for t in np.linspace(0, 1, 201)]
    assert b <= min(grid) + 1e-9 and b == pytest.approx(mixture.bits(lam * p + (1 - lam) * q))
    # A model that is better at every position takes all the weight.
    assert mixture.best_mixture_weight(p, p / 2)[0] == 1.0
    assert mixture.best_mixture_weight(p / 2, p)[0] == 0.0


def test_gate_weights_each_bucket_and_beats_one_weight() -> None:
    rng = np.random.default_rng(0)
    counts = np.floor(2 ** rng.uniform(0, 10, 20_000))  # every bucket well filled
    # The n-gram is good where it saw the context often, the RNN elsewhere.
    good = rng.uniform(0.5, 0.9, len(counts))
    bad = rng.uniform(0.01, 0.1, len(counts))
    frequent = counts >= 64
    p_rnn, p_kn = np.where(frequent, bad, good), np.where(frequent, good, bad)
    gate = mixture.MixtureGate.fit(p_rnn, p_kn, counts)
    w = gate.weight(counts)
    assert (w[frequent] < 0.2).all() and (w[~frequent] > 0.8).all()
    _, fixed = mixture.best_mixture_weight(p_rnn, p_kn)
    assert mixture.bits(gate.mix(p_rnn, p_kn, counts)) < fixed - 0.5
    again = mixture.MixtureGate.from_manifest({"weight": gate.mean_weight, "gate": gate.to_json()})
    np.testing.assert_allclose(again.weight(counts), w, atol=1e-6)
    fixed_gate = mixture.MixtureGate.from_manifest({"weight": 0.3})
    assert (fixed_gate.weight(counts) == 0.3).all()


# --- the trained model ----------------------------------------------------------------------------


def test_training_reports_rnn_ngram_mixture_and_tags(text_model: Path) -> None:
    gen = TextGenerator(text_model)
    m = gen.manifest.metrics
    first, last = m["history"][0]["val_bpc"], m["history"][-1]["val_bpc"]
    assert last < first < 8.0  # 8 bits per byte is the uniform distribution
    assert 1.0 < m["ngram_val_bpc"] < 8.0
    assert m["onnx_max_abs_diff"] < 1e-4
    # The gate is fitted on the same positions: never worse than one weight or either model.
    assert m["mixture_val_bpc"] <= m["mixture_fixed_weight_val_bpc"] + 1e-9
    assert m["mixture_fixed_weight_val_bpc"] <= min(m["val_bpc"], m["ngram_val_bpc"]) + 1e-9
    assert gen.tags == list(TAGS) and m["tags"] == list(TAGS)
    assert set(m["per_tag"]) == set(TAGS)


def test_served_files_reproduce_the_three_figures(
    text_model: Path, tagged: list[tuple[str, str]]
) -> None:
    gen = TextGenerator(text_model)
    m = gen.manifest.metrics
    assert gen.ngram is not None
    docs = text_data.documents([t for t, _ in tagged], [g for _, g in tagged])
    train, val_docs = text_data.split_documents(docs, TINY_RNN.val_fraction, TINY_RNN.seed)
    ids = {t: i for i, t in enumerate(text_data.tag_vocabulary(train))}
    val = text_data.encode(val_docs, ids)
    streams, per = text_data.eval_layout(len(val), rnn.EVAL_STREAMS)
    x = val[: streams * per].astype(np.int64).reshape(streams, per)
    logits, _ = gen.step(x, np.zeros((gen.layers, streams, gen.hidden), np.float32))
    z = logits.reshape(-1, 256).astype(np.float64)
    p_all = np.exp(z - z.max(axis=1, keepdims=True))
    p_all /= p_all.sum(axis=1, keepdims=True)
    positions = text_data.scored(val)
    positions = positions[positions <= streams * per]
    p_rnn = p_all[positions - 1, val[positions]]
    plain = text_data.bytes_only(val)
    at = (np.cumsum(val < 256) - 1)[positions]
    p_kn, counts = gen.ngram.probs(plain)[at], gen.ngram.context_counts(plain)[at]
    assert mixture.bits(p_rnn) == pytest.approx(m["val_bpc"], abs=1e-4)
    assert mixture.bits(p_kn) == pytest.approx(m["ngram_val_bpc"], abs=1e-9)
    assert mixture.bits(gen.gate.mix(p_rnn, p_kn, counts)) == pytest.approx(
        m["mixture_val_bpc"], abs=1e-4
    )


def test_score_is_the_served_distribution(text_model: Path, tagged: list[tuple[str, str]]) -> None:
    gen = TextGenerator(text_model)
    text = tagged[0][0][:300]
    total, n = gen.score(text)
    assert n == len(text.encode()) + 1  # every byte and the end of the text
    # The same bits, one byte at a time, from the distribution generation samples from.
    tokens = [0, *text.encode(), 0]
    h = np.zeros((gen.layers, 1, gen.hidden), np.float32)
    expected = 0.0
    for i in range(len(tokens) - 1):
        logits, h = gen.step(np.array([[tokens[i]]], np.int64), h)
        ctx = np.array([[0] * 6 + tokens[: i + 1]], np.int64)[:, -6:]
        row = gen._mix(logits[:, -1, :], ctx)[0]
        expected -= (row[tokens[i + 1]] - np.logaddexp.reduce(row)) / np.log(2)
    assert total == pytest.approx(expected, rel=1e-6)
    assert gen.score("zzzz qqqq xxxx")[0] / 15 > total / n  # gibberish costs more per byte


def test_tags_steer_generation(text_model: Path) -> None:
    gen = TextGenerator(text_model)
    per_tag = gen.manifest.metrics["per_tag"]
    # The control code helps on every tag's own validation documents.
    for tag in TAGS:
        assert per_tag[tag]["val_bpc_tagged"] < per_tag[tag]["val_bpc_untagged"], per_tag
    a = gen.generate("", n=4, seed=1, max_length=40, tag="startrek")
    assert a == gen.generate("", n=4, seed=1, max_length=40, tag="startrek")
    assert a != gen.generate("", n=4, seed=1, max_length=40, tag="zippy")
    with pytest.raises(ValueError, match=r"unknown tag 'murphy'.*startrek, zippy"):
        gen.generate("", tag="murphy")


def test_model_without_ngram_or_tags_still_generates(text_model: Path, tmp_path: Path) -> None:
    # A version published before the mixture existed: no n-gram file, no mixture entry.
    old = tmp_path / "old"
    old.mkdir()
    for f in ("model.onnx", "manifest.json"):
        (old / f).write_bytes((text_model / f).read_bytes())
    manifest = read_manifest(old)
    extra = {k: v for k, v in manifest.extra.items() if k != "mixture"}
    pre = {k: v for k, v in manifest.preprocessing.items() if k != "tags"}
    write_manifest(old, manifest.model_copy(update={"extra": extra, "preprocessing": pre}))
    gen = TextGenerator(old)
    assert gen.ngram is None and not gen.gate.uses_ngram and gen.tags == []
    a = gen.generate("The ", n=3, seed=7, max_length=30)
    assert a == gen.generate("The ", n=3, seed=7, max_length=30)
    # The mixture changes what is sampled, so the two models really differ.
    assert a != TextGenerator(text_model).generate("The ", n=3, seed=7, max_length=30)
    with pytest.raises(ValueError, match="trained without tags"):
        gen.generate("", tag="startrek")


def test_text_onnx_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = rnn.CharGRU(TINY_RNN, n_tags=3)
    assert rnn.export_onnx(model, TINY_RNN, tmp_path / "m.onnx") < 1e-4


def test_generate_shapes_and_determinism(text_model: Path) -> None:
    gen = TextGenerator(text_model)
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
        {"tag": 3},
    ],
)
def test_generate_rejects_bad_arguments(text_model: Path, kwargs: dict[str, Any]) -> None:
    gen = TextGenerator(text_model)
    with pytest.raises(ValueError):
        gen.generate("x", **kwargs)


# --- training runs --------------------------------------------------------------------------------


def test_text_cancel_then_resume(tmp_path: Path, tagged: list[tuple[str, str]]) -> None:
    texts = [t for t, _ in tagged[:40]]
    calls = {"n": 0}

    def stop_after_5() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    ckpt = tmp_path / "ckpt"
    with pytest.raises(rnn.TrainingCancelled) as info:
        rnn.train_text_generator(
            texts, tmp_path, "tg", "1", epochs=1, config=TINY_RNN,
            should_stop=stop_after_5, checkpoint_dir=ckpt,
        )  # fmt: skip
    assert info.value.step == 5
    assert (ckpt / rnn.CHECKPOINT_FILE).is_file()
    assert not (tmp_path / "tg" / "1").exists()

    events: list[dict[str, Any]] = []
    manifest = rnn.train_text_generator(
        texts, tmp_path, "tg", "1", epochs=1, config=TINY_RNN,
        progress=events.append, checkpoint_dir=ckpt, log_every=1,
    )  # fmt: skip
    assert events[0] == {"event": "resumed", "step": 5, "epoch": 0}
    steps = [e["step"] for e in events if e.get("event") == "step"]
    assert steps[0] == 6 and steps[-1] == manifest.metrics["steps"]
    assert not (ckpt / rnn.CHECKPOINT_FILE).exists()


def test_text_training_stops_at_its_time_budget(
    tmp_path: Path, tagged: list[tuple[str, str]]
) -> None:
    fractions: list[float] = []

    def seen(event: dict[str, Any]) -> None:
        if event.get("fraction") is not None:
            fractions.append(event["fraction"])

    manifest = rnn.train_text_generator(
        [t for t, _ in tagged[:40]], tmp_path, "tg", "1", epochs=None, budget_s=1.5,
        config=TINY_RNN, progress=seen, log_every=1,
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
    # Warm-up, then a cosine that reaches 10% of the rate exactly when the budget is spent.
    by_time = rnn.Schedule(total_steps=None, budget_s=10.0)
    assert by_time.lr(0, 0.0, 1.0) < by_time.lr(99, 0.5, 1.0)
    assert by_time.lr(500, 10.0, 1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="epochs, budget_s"):
        rnn.train_text_generator(["a b", "c d"], Path("."), "x", "1", epochs=None)


def test_corpus_smaller_than_one_batch_still_trains(tmp_path: Path) -> None:
    cfg = rnn.RNNConfig(embed=8, hidden=8, layers=1, seq_len=16, batch_size=32, ngram_order=3)
    manifest = rnn.train_text_generator(["x" * 60, "y" * 40], tmp_path, "tg", "1", epochs=1,
                                        config=cfg)  # fmt: skip
    assert manifest.metrics["steps"] == 1
