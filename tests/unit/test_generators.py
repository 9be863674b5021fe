"""Text and image generators: training hooks, ONNX export, serving. Tiny models on real data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from workers.generation.image import ImageGenerator  # noqa: E402
from workers.training import gan  # noqa: E402
from workers.training.build.image_generator import load_openmoji  # noqa: E402

TINY_GAN = gan.GANConfig(ngf=8, ndf=8, batch_size=8, fid_samples=16)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def icons() -> list[Any]:
    return load_openmoji(limit=16)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory, icons: list[Any]) -> Path:
    models = tmp_path_factory.mktemp("models")
    gan.train_image_generator(icons, models, "ig", "1", steps=3, config=TINY_GAN)
    return models / "ig" / "1"


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
