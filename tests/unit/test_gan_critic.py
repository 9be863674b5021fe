"""The GAN's critic: a tag classifier (the discriminator's, or one of its own) published beside
the generator, and serving's resampling of k drawings for a tagged request. Tiny networks on a
few real icons."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shared.inference.manifest import read_manifest, write_manifest  # noqa: E402
from workers.generation.image import ImageGenerator  # noqa: E402
from workers.training import gan  # noqa: E402
from workers.training.build.image_generator import load_openmoji_tagged  # noqa: E402
from workers.training.gan_critic import CriticConfig, train_tag_classifier  # noqa: E402

CRITIC = gan.GANConfig(
    ngf=8, ndf=8, batch_size=8, fid_samples=16, eval_samples=8, aux_tag=1.0, tag_candidates=3
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def icons() -> list[Any]:
    return load_openmoji_tagged(limit=24)[0]


@pytest.fixture(scope="module")
def critic_model(tmp_path_factory: pytest.TempPathFactory, icons: list[Any]) -> Path:
    models = tmp_path_factory.mktemp("models")
    gan.train_image_generator(
        icons, models, "cg", "1", steps=4, labels=[i % 3 for i in range(len(icons))],
        label_names=["a", "b", "c"], config=CRITIC,
    )  # fmt: skip
    return models / "cg" / "1"


class _ChannelCritic(torch.nn.Module):
    """A stand-in critic with a known taste: tag k's logit is 1e4 x the image's mean of colour
    channel k, so it gives tag "a" to red images, "b" to green, "c" to blue, all but surely."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return 1e4 * image.mean((2, 3))


class _FlatColour(torch.nn.Module):
    """A stand-in generator: a flat image whose colour is the first three latent entries, so
    drawings differ in colour, and the critic above has something to choose."""

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        colour = (0.4 * z[:, :3]).clamp(-1, 1) + 0 * label.view(-1, 1).float()
        return colour.view(-1, 3, 1, 1).expand(-1, 3, 64, 64)


def _export(module: torch.nn.Module, args: tuple[Any, ...], path: Path, names: list[str]) -> None:
    """``names``: the inputs (one per argument), then the outputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=17, input_names=names[: len(args)],
            output_names=names[len(args) :], dynamic_axes={k: {0: "batch"} for k in names},
        )  # fmt: skip


def _with_channel_critic(model_dir: Path, tmp_path: Path) -> ImageGenerator:
    """The trained model's manifest (tags, modes, critic settings) with both networks swapped
    for the stand-ins above."""
    target = tmp_path / "cg" / "1"
    shutil.copytree(model_dir, target)
    label = torch.zeros(2, dtype=torch.long)
    _export(_FlatColour(), (torch.zeros(2, 100), label), target / "model.onnx",
            ["z", "label", "image"])  # fmt: skip
    _export(_ChannelCritic(), (torch.zeros(2, 3, 64, 64),), target / "critic.onnx",
            ["image", "tag_logits"])  # fmt: skip
    write_manifest(target, read_manifest(target))  # the new files' hashes
    return ImageGenerator(target)


def _channel_means(images: list[Any]) -> np.ndarray:
    return np.stack([np.asarray(im, np.float64).mean((0, 1)) for im in images])


def test_critic_is_published_with_its_selection(critic_model: Path) -> None:
    gen = ImageGenerator(critic_model)
    critic = gen.manifest.preprocessing["critic"]
    assert critic["file"] == "critic.onnx" and critic["candidates"] == 3
    assert critic["network"] == "disc"
    assert 0.0 <= gen.manifest.metrics["critic_heldout_accuracy"] <= 1.0
    assert gen.manifest.metrics["critic_onnx_max_abs_diff"] < 1e-3
    assert gen.has_critic and gen.candidates == 3
    named = gen.critic_tags(gen.generate(4, seed=1))
    assert len(named) == 4 and set(named) <= {"a", "b", "c"}


@pytest.mark.parametrize("proposal", ["all", "tag"])
def test_tagged_images_are_drawn_towards_the_critics_tag(
    critic_model: Path, tmp_path: Path, proposal: str
) -> None:
    gen = _with_channel_critic(critic_model, tmp_path)
    gen.proposal = proposal
    for channel, tag in enumerate(("a", "b", "c")):
        picked = _channel_means(gen.generate(24, seed=7, tag=tag))
        gen.candidates = 1  # the generator alone: each image's first drawing
        first = _channel_means(gen.generate(24, seed=7, tag=tag))
        gen.candidates = 3
        ours_first, ours = first.argmax(1) == channel, picked.argmax(1) == channel
        # A drawing of another colour weighs nothing beside one of the tag's colour: an image
        # whose first drawing is of the tag's colour stays so, and others become so.
        assert ours[ours_first].all()
        assert ours.sum() > ours_first.sum()


def test_selection_keeps_the_prefix_property_and_leaves_untagged_requests(
    critic_model: Path,
) -> None:
    gen = ImageGenerator(critic_model)
    a, b = gen.generate(3, seed=4, tag="c"), gen.generate(8, seed=4, tag="c")
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=False))
    gen.proposal = "all"
    a, b = gen.generate(3, seed=4, tag="c"), gen.generate(8, seed=4, tag="c")
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=False))
    untagged = gen.generate(6, seed=4)
    gen.candidates = 1
    raw = gen.generate(6, seed=4)
    assert all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(untagged, raw, strict=True)
    )
    with pytest.raises(ValueError, match="unknown tag"):
        ImageGenerator(critic_model).generate(2, seed=1, tag="zebra")


def _shapes(n: int, seed: int) -> tuple[Any, Any]:
    """``n`` images in [-1, 1] of three kinds at random places and sizes on white: a red
    square (0), a blue disc (1), a black cross (2); and their kinds."""
    rng = np.random.default_rng(seed)
    kinds = np.arange(n) % 3
    yy, xx = np.mgrid[:64, :64]
    out = np.ones((n, 3, 64, 64), np.float32)
    for i, k in enumerate(kinds):
        cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(8, 16)
        if k == 0:
            mask = (abs(yy - cy) < r) & (abs(xx - cx) < r)
        elif k == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        else:
            mask = ((abs(yy - cy) < 2) & (abs(xx - cx) < r)) | (
                (abs(xx - cx) < 2) & (abs(yy - cy) < r)
            )
        colour = {0: (1.0, -1.0, -1.0), 1: (-1.0, -1.0, 1.0), 2: (-1.0, -1.0, -1.0)}[int(k)]
        for c in range(3):
            out[i, c][mask] = colour[c]
    return torch.from_numpy(out), torch.from_numpy(kinds)


def test_a_tag_classifier_of_its_own_names_unseen_images() -> None:
    x, y = _shapes(48, seed=0)
    model = train_tag_classifier(x, y, 3, CriticConfig(width=8, steps=120, batch_size=16))
    assert not model.training  # eval mode: an image's logits do not depend on its batch
    test_x, test_y = _shapes(30, seed=1)
    with torch.no_grad():
        named = model(test_x).argmax(1)
        alone = torch.cat([model(test_x[i : i + 1]) for i in range(3)])
    assert (named == test_y).float().mean().item() >= 0.9
    assert torch.allclose(alone, model(test_x[:3]), atol=1e-5)
    with pytest.raises(ValueError, match="tags for"):
        train_tag_classifier(x, y[:5], 3)


@pytest.mark.parametrize("network", ["own", "both"])
def test_a_critic_of_its_own_is_published(tmp_path: Path, icons: list[Any], network: str) -> None:
    # "own" needs no auxiliary classifier in D; "both" averages it with D's.
    cfg = gan.GANConfig(ngf=8, ndf=8, batch_size=8, fid_samples=16, eval_samples=8,
                        tag_candidates=3, critic=network, critic_steps=3,
                        aux_tag=1.0 if network == "both" else 0.0)  # fmt: skip
    m = gan.train_image_generator(
        icons, tmp_path, "oc", "1", steps=1, labels=[i % 2 for i in range(len(icons))],
        label_names=["a", "b"], config=cfg,
    )  # fmt: skip
    assert m.preprocessing["critic"]["network"] == network
    assert 0.0 <= m.metrics["critic_heldout_accuracy"] <= 1.0
    assert m.metrics["critic_onnx_max_abs_diff"] < 1e-3
    gen = ImageGenerator(tmp_path / "oc" / "1")
    assert gen.has_critic and set(gen.critic_tags(gen.generate(4, seed=1))) <= {"a", "b"}
    with pytest.raises(ValueError, match="critic must be"):
        gan.train_image_generator(
            icons, tmp_path, "oc", "2", steps=1, config=gan.GANConfig(critic="tagger")
        )


def test_no_critic_without_the_auxiliary_classifier(tmp_path: Path, icons: list[Any]) -> None:
    # tag_candidates alone publishes nothing to select with: the default critic is the
    # auxiliary head.
    cfg = gan.GANConfig(ngf=8, ndf=8, batch_size=8, fid_samples=16, eval_samples=8,
                        tag_candidates=3)  # fmt: skip
    m = gan.train_image_generator(
        icons, tmp_path, "ng", "1", steps=1, labels=[i % 2 for i in range(len(icons))],
        label_names=["a", "b"], config=cfg,
    )  # fmt: skip
    assert "critic" not in m.preprocessing
    assert not (tmp_path / "ng" / "1" / "critic.onnx").exists()
    gen = ImageGenerator(tmp_path / "ng" / "1")
    assert not gen.has_critic and len(gen.generate(2, seed=1, tag="a")) == 2
    with pytest.raises(ValueError, match="without a critic"):
        gen.critic_tags(gen.generate(1, seed=1))
    with pytest.raises(ValueError, match="tag_candidates"):
        gan.train_image_generator(
            icons, tmp_path, "ng", "2", steps=1, config=gan.GANConfig(tag_candidates=0)
        )


def test_a_run_resumes_across_the_critic_fields(tmp_path: Path, icons: list[Any]) -> None:
    # The critic is trained after the GAN, so a checkpoint stays good when only the critic
    # changes: the run resumes instead of starting over.
    calls = {"n": 0}

    def stop_after_2() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    labels, names, ckpt = [i % 2 for i in range(len(icons))], ["a", "b"], tmp_path / "ckpt"
    with pytest.raises(gan.TrainingCancelled):
        gan.train_image_generator(
            icons, tmp_path, "rc", "1", steps=4, labels=labels, label_names=names,
            config=CRITIC, should_stop=stop_after_2, checkpoint_dir=ckpt,
        )  # fmt: skip
    events: list[dict[str, Any]] = []
    own = replace(CRITIC, critic="own", critic_steps=2)
    m = gan.train_image_generator(
        icons, tmp_path, "rc", "1", steps=4, labels=labels, label_names=names, config=own,
        progress=events.append, checkpoint_dir=ckpt,
    )  # fmt: skip
    assert events[0] == {"event": "resumed", "step": 2}
    assert {"event": "critic", "steps": 2, "images": m.metrics["train_images"]} in events
    assert m.preprocessing["critic"]["network"] == "own"
