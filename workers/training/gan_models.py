"""The GAN's networks, their image tensors and the differentiable augmentation (torch).

Generator: DCGAN transposed convolutions with batch norm; a class-conditional one concatenates a
learned class embedding to ``z``. Discriminator: strided convolutions, spectral norm (or batch
norm), and for a conditional model a projection head (Miyato & Koyama 2018): the score is
``linear(h) + <embed(y), mean_xy h>``, so the class enters as an inner product with the features
instead of as an input channel; optionally an auxiliary tag classifier on the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

LATENT = 100
SIZE = 64
AUGMENTS = ("color", "translation", "cutout")


class CondBatchNorm(nn.Module):
    """Batch norm whose gain and bias come from the class (SNGAN/BigGAN generators): the class
    steers every layer's statistics, while ``z`` keeps its own path. Concatenating a class
    embedding to ``z`` instead let the generator drop ``z`` and draw one image per class."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return h * self.gain(label)[:, :, None, None] + self.bias(label)[:, :, None, None]


class Generator(nn.Module):
    def __init__(
        self,
        latent: int = LATENT,
        ngf: int = 32,
        num_classes: int = 0,
        class_dim: int = 32,
        mean_image: torch.Tensor | None = None,
        cond_bn: bool = False,
        upsample_rgb: bool = False,
    ):
        super().__init__()
        self.latent = latent
        self.num_classes = num_classes
        # Conditioning: class-conditional batch norm (cond_bn), or an embedding concatenated to z.
        self.cond_bn = bool(cond_bn and num_classes)
        concat = bool(num_classes and not self.cond_bn)
        self.embed = nn.Embedding(num_classes, class_dim) if concat else None
        cin = latent + (class_dim if concat else 0)
        widths = (ngf * 8, ngf * 4, ngf * 2, ngf)
        convs: list[nn.Module] = [nn.ConvTranspose2d(cin, widths[0], 4, 1, 0, bias=False)]
        convs += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False) for a, b in pairwise(widths)]
        norms: list[nn.Module] = [
            CondBatchNorm(w, num_classes) if self.cond_bn else nn.BatchNorm2d(w) for w in widths
        ]
        # The last layer: a strided transposed convolution, or nearest upsampling + 3x3
        # convolution (upsample_rgb), which cannot leave the transposed convolution's
        # checkerboard of dots on the white ground.
        to_rgb: nn.Module = nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False)
        if upsample_rgb:
            to_rgb = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ngf, 3, 3, 1, 1, bias=False)
            )
        if self.cond_bn:
            self.convs = nn.ModuleList(convs)
            self.norms = nn.ModuleList(norms)
            self.to_rgb = to_rgb
        else:
            # The unconditional layout keeps its state-dict keys (net.N), so published
            # checkpoints and resumable training runs still load.
            layers: list[nn.Module] = []
            for conv, norm in zip(convs, norms, strict=True):
                layers += [conv, norm, nn.ReLU(True)]
            self.net = nn.Sequential(*layers, to_rgb)
        # A learned per-pixel bias before the tanh, started at the training images' mean: the
        # white ground and centred shape are there from step 0 instead of learned first.
        self.bias = None
        if mean_image is not None:
            self.bias = nn.Parameter(torch.atanh(mean_image.clamp(-0.98, 0.98)).unsqueeze(0))

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and label is None:
            raise ValueError("a conditional generator needs a label per latent")
        if self.embed is not None:
            assert label is not None
            z = torch.cat([z, self.embed(label)], 1)
        x = z.view(z.shape[0], -1, 1, 1)
        if self.cond_bn:
            assert label is not None
            for conv, norm in zip(self.convs, self.norms, strict=True):
                x = torch.relu(norm(conv(x), label))
            x = self.to_rgb(x)
        else:
            x = self.net(x)
        return torch.tanh(x if self.bias is None else x + self.bias)


class Discriminator(nn.Module):
    def __init__(
        self,
        ndf: int = 32,
        spectral: bool = True,
        num_classes: int = 0,
        mbstd: bool = False,
        num_tags: int = 0,
        twin: bool = False,
    ):
        super().__init__()
        self.mbstd = mbstd

        def sn(m: nn.Module) -> nn.Module:
            return nn.utils.spectral_norm(m) if spectral else m

        def conv(cin: int, cout: int, stride: int, pad: int) -> nn.Module:
            return sn(nn.Conv2d(cin, cout, 4, stride, pad, bias=spectral))

        def norm(c: int) -> nn.Module:
            # Spectral norm already bounds the layer; batch norm on top fights it.
            return nn.Identity() if spectral else nn.BatchNorm2d(c)

        act = nn.LeakyReLU(0.2, True)
        self.features = nn.Sequential(
            conv(3, ndf, 2, 1),
            act,
            conv(ndf, ndf * 2, 2, 1),
            norm(ndf * 2),
            act,
            conv(ndf * 2, ndf * 4, 2, 1),
            norm(ndf * 4),
            act,
            conv(ndf * 4, ndf * 8, 2, 1),
            norm(ndf * 8),
            act,
        )
        self.out = conv(ndf * 8 + int(mbstd), 1, 1, 0)
        # Spectral norm on the class embedding even when D uses batch norm: an unbounded
        # projection dwarfs the unconditional score within a hundred steps at lr 1e-3.
        self.project = None
        if num_classes:
            self.project = nn.utils.spectral_norm(nn.Embedding(num_classes, ndf * 8))
        # An auxiliary tag classifier on the pooled features (AC-GAN's head, trained on real
        # images only): what G's ``aux_tag`` loss asks a fake to be recognised as.
        self.classify = nn.Linear(ndf * 8, num_tags) if num_tags else None
        # Its twin, trained on G's images (TAC-GAN, Gong et al. 2019): G is asked to be
        # recognised by the first and not by the second, which cancels the plain auxiliary
        # loss's pull towards each tag's most recognisable, least varied drawings.
        self.classify_fake = nn.Linear(ndf * 8, num_tags) if num_tags and twin else None

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.score_and_features(x, label)[0]

    def score_and_features(
        self, x: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The score per image and the last features, pooled (``[n, 8 * ndf]``); the
        auxiliary classifier's tag logits are ``self.classify(pooled)``."""
        h = self.features(x)
        pooled = h.mean((2, 3))
        score = self.out(minibatch_std(h) if self.mbstd else h).view(-1)
        if self.project is not None:
            if label is None:
                raise ValueError("a conditional discriminator needs a label per image")
            score = score + (self.project(label) * pooled).sum(1)
        return score, pooled


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """``h`` with one more channel: the features' standard deviation across groups of
    ``group`` images (ProGAN), so D can see a batch whose images are too alike."""
    b, c, hh, ww = h.shape
    g = group if b % group == 0 else 1
    y = h.float().view(g, b // g, c, hh, ww)
    y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # one figure per group
    y = y.view(1, b // g, 1, 1, 1).expand(g, -1, 1, hh, ww).reshape(b, 1, hh, ww)
    return torch.cat([h, y.to(h.dtype)], 1)


def to_channels_last(*modules: nn.Module) -> None:
    """NHWC weights: the layout oneDNN's CPU convolutions run fastest in."""
    for m in modules:
        m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stub lacks it


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# image tensors


def images_to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """``[n, 3, 64, 64]`` in [-1, 1]; transparency is flattened onto white."""
    arrs = []
    for im in images:
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
        if im.size != (SIZE, SIZE):
            im = im.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        arrs.append(np.asarray(im, dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor | np.ndarray) -> list[Image.Image]:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    arr = np.clip(np.rint((arr + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return [Image.fromarray(a, "RGB") for a in arr]


# ---------------------------------------------------------------------------------------------
# differentiable augmentation (DiffAugment, Zhao et al. 2020), applied to real and fake alike so
# the discriminator cannot memorise the few thousand icons and G is never pushed to copy them


def translate(x: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Random shift by up to ``ratio`` of the size, filling with white like the icons' ground."""
    if ratio <= 0:
        return x
    b, _, h, w = x.shape
    s = int(h * ratio + 0.5)
    tx = torch.randint(-s, s + 1, (b, 1, 1), generator=gen)
    ty = torch.randint(-s, s + 1, (b, 1, 1), generator=gen)
    gb, gy, gx = torch.meshgrid(torch.arange(b), torch.arange(h), torch.arange(w), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1], value=1.0).permute(0, 2, 3, 1)
    return padded[gb, gy, gx].permute(0, 3, 1, 2)


def color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random brightness, saturation and contrast (DiffAugment's ranges, on [-1, 1] pixels)."""
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)  # brightness +-0.5
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, generator=gen) * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, generator=gen) + 0.5) + mean


def cutout(x: torch.Tensor, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Blank one random square of ``ratio`` x the size per image (to 0, mid-grey)."""
    if ratio <= 0:
        return x
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=gen)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=gen)
    top, left = cy - ch // 2, cx - cw // 2
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def augment(
    x: torch.Tensor, policy: Sequence[str], translation: float, cut: float, gen: torch.Generator
) -> torch.Tensor:
    if "color" in policy:
        x = color(x, gen)
    if "translation" in policy:
        x = translate(x, translation, gen)
    if "cutout" in policy:
        x = cutout(x, cut, gen)
    return x


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x.shape[0], 1, 1, 1, generator=gen) < 0.5
    return torch.where(mask, x.flip(3), x)
