"""The GAN's critic: the discriminator's tag classifier published beside the generator, and
serving's resampling of k drawings for a tagged request. Tiny networks on a few real icons."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shared.inference.manifest import read_manifest, write_manifest  # noqa: E402
from workers.generation.image import ImageGenerator  # noqa: E402
from workers.training import gan  # noqa: E402
from workers.training.build.image_generator import load_openmoji_tagged  # noqa: E402

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


def test_no_critic_without_the_auxiliary_classifier(tmp_path: Path, icons: list[Any]) -> None:
    # tag_candidates alone publishes nothing to select with: the critic is the auxiliary head.
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
