"""Export a trained GAN generator to ONNX, check it against torch, publish it with a manifest."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shared.inference.manifest import Manifest, publish_model_dir, write_manifest
from workers.training.gan_models import SIZE, Discriminator, Generator

if TYPE_CHECKING:
    from workers.training.gan import GANConfig


def export_onnx(generator: Generator, path: Path) -> float:
    """Export ``z[batch,latent] (+ label[batch] int64) -> image[batch,3,64,64]``; returns
    max |onnx - torch|."""
    import onnxruntime as ort

    generator = generator.eval()
    conditional = bool(generator.num_classes)
    args: tuple[torch.Tensor, ...] = (torch.zeros(2, generator.latent),)
    names, axes = ["z"], {"z": {0: "batch"}, "image": {0: "batch"}}
    if conditional:
        args += (torch.zeros(2, dtype=torch.long),)
        names.append("label")
        axes["label"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            generator, args, str(path), dynamo=False, opset_version=17, input_names=names,
            output_names=["image"], dynamic_axes=axes,
        )  # fmt: skip
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, generator.latent, generator=g)
    feeds = {"z": z.numpy()}
    label = None
    if conditional:
        label = torch.randint(0, generator.num_classes, (5,), generator=g)
        feeds["label"] = label.numpy()
    with torch.no_grad():
        ref = generator(z, label).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, feeds)
    return float(np.abs(out - ref).max())


class DiscriminatorCritic(torch.nn.Module):
    """The discriminator's auxiliary tag classifier as one graph: ``image -> tag_logits``."""

    def __init__(self, disc: Discriminator) -> None:
        super().__init__()
        if disc.classify is None:
            raise ValueError("a critic needs the discriminator's tag classifier")
        self.features = disc.features
        self.classify = disc.classify

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classify(self.features(image).mean((2, 3)))
        return logits


def fake_batch_statistics(
    disc: Discriminator,
    generator: Generator,
    labels: torch.Tensor,
    seed: int,
    batch: int,
    n: int = 2048,
) -> None:
    """Set ``disc``'s batch-norm running statistics to those of the generator's images: D saw
    every fake batch normalised by its own statistics, so that is what an image to be judged on
    its own should be normalised by (the running averages mix real and fake batches)."""
    norms = [m for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    g = torch.Generator().manual_seed(seed)
    generator.eval()
    disc.train()
    with torch.no_grad():
        for _ in range(0, n, batch):  # batches of the size D was trained on
            z = torch.randn(batch, generator.latent, generator=g)
            y = labels[torch.randint(0, len(labels), (batch,), generator=g)]
            disc.score_and_features(
                generator(z, y).float(), y if disc.project is not None else None
            )
    disc.eval()


def export_critic(critic: torch.nn.Module, path: Path) -> float:
    """Export a tag classifier (what ``gan_critic.build_critic`` returns),
    ``image[batch,3,64,64] in [-1,1] -> tag_logits[batch,tags]``, in eval mode (batch norm on
    its running statistics, so an image's logits do not depend on the rest of its batch);
    returns max |onnx - torch|."""
    import onnxruntime as ort

    critic = critic.float().eval()  # the run is over: the critic is not trained again
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            critic, (torch.zeros(2, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
            input_names=["image"], output_names=["tag_logits"],
            dynamic_axes={"image": {0: "batch"}, "tag_logits": {0: "batch"}},
        )  # fmt: skip
    x = torch.rand(5, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        ref = critic(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"image": x.numpy()})
    return float(np.abs(out - ref).max())


def export_image_generator(
    generator: Generator,
    cfg: GANConfig,
    models_dir: Path,
    name: str,
    version: str,
    *,
    metrics: dict[str, Any],
    tags: Sequence[str] = (),
    tag_counts: Sequence[int] = (),
    modes: Sequence[int] | None = None,
    mode_counts: Sequence[int] | None = None,
    license: str = "",
    attribution: str = "",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    critic: torch.nn.Module | None = None,
) -> Manifest:
    """Publish the generator; with ``critic`` (a tag classifier, ``image -> tag_logits``, and
    ``cfg.tag_candidates`` > 1) also ``critic.onnx``, by which serving draws a tagged image from
    ``cfg.tag_candidates`` drawings with weight ``p(tag | image)``."""
    with publish_model_dir(models_dir, name, version, overwrite=overwrite) as tmp:
        diff = export_onnx(generator, tmp / "model.onnx")
        if not diff < 1e-4:
            raise RuntimeError(f"ONNX export differs from torch by {diff:.2e} (limit 1e-4)")
        critic_diff = None
        if critic is not None and tags:
            critic_diff = export_critic(critic, tmp / "critic.onnx")
            if not critic_diff < 1e-3:
                raise RuntimeError(f"critic ONNX differs by {critic_diff:.2e} (limit 1e-3)")
        inputs = [f"z[batch,{cfg.latent}] float32"]
        preprocessing: dict[str, Any] = {
            "latent": cfg.latent,
            "size": SIZE,
            "output_range": [-1.0, 1.0],
        }
        if tags:
            # Serving draws a tag for an untagged request with the training frequencies.
            preprocessing |= {"tags": list(tags), "tag_counts": list(tag_counts)}
        if modes is not None:
            # Self-conditioning (gan_modes): the label is a mode; serving draws one of the
            # asked tag's modes (any mode for an untagged request) with these frequencies.
            n = len(modes)
            inputs.append(f"label[batch] int64, index into preprocessing.modes (0..{n - 1})")
            preprocessing["modes"] = {"tag": list(modes), "counts": list(mode_counts or [1] * n)}
        elif tags:
            inputs.append(f"label[batch] int64, index into preprocessing.tags (0..{len(tags) - 1})")
        if critic_diff is not None:
            preprocessing["critic"] = {
                "file": "critic.onnx",
                "candidates": cfg.tag_candidates,
                "proposal": cfg.tag_proposal,
                "network": cfg.critic,
            }
        architecture = "DCGAN generator (EMA)"
        if generator.num_classes:
            architecture += (
                ", class-conditional batch norm" if generator.cond_bn
                else ", class embedding concatenated to z"
            ) + "; projection discriminator"  # fmt: skip
            if modes is not None:
                architecture += f"; conditioned on {len(modes)} self-conditioning modes"
        manifest = Manifest(
            name=name,
            version=version,
            kind="image_generator",
            inputs=inputs,
            outputs=[f"image[batch,3,{SIZE},{SIZE}] float32 in [-1,1]"],
            preprocessing=preprocessing,
            metrics={
                **metrics,
                "onnx_max_abs_diff": diff,
                **({"critic_onnx_max_abs_diff": critic_diff} if critic_diff is not None else {}),
            },
            extra={**(extra or {}), "architecture": architecture, "config": asdict(cfg)},
            license=license,
            attribution=attribution,
        )
        return write_manifest(tmp, manifest)
