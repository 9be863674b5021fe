"""The GAN's recipe: its configuration, losses and learning-rate decay (docs/image-generator.md
has the measurements behind each default)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from workers.training.gan_models import LATENT


@dataclass(frozen=True)
class GANConfig:
    latent: int = LATENT
    ngf: int = 32
    ndf: int = 32
    batch_size: int = 16  # twice the updates of 32 per CPU second, and updates are what is short
    lr_g: float = 1e-3  # 5x DCGAN's 2e-4: learns the icons' layout in hundreds of steps
    lr_d: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"  # "bce" (DCGAN, non-saturating) or "hinge"
    spectral_norm: bool = False  # True: spectral norm instead of batch norm in D
    augment: str = "color,translation,cutout"  # DiffAugment policy (see AUGMENTS)
    translation: float = 0.125  # shift, as a fraction of the image size
    cutout: float = 0.25  # side of the blanked square, as a fraction of the image size
    decay_from: float = 0.5  # learning rates fall linearly to 0 from this fraction of the run
    ema_decay: float = 0.99  # a few thousand steps: 0.999 would still hold the first hundreds
    class_dim: int = 32  # conditional models: size of the class embedding concatenated to z
    # Conditional models: class-conditional batch norm in G (True), or the class embedding
    # concatenated to z (False), which collapsed to one image per class.
    cond_bn: bool = True
    upsample_rgb: bool = False  # G's last layer: upsample + 3x3 conv, not a transposed conv
    mean_bias: bool = False  # G adds a learned image, started at the data mean, before its tanh
    val_fraction: float = 0.1
    fid_samples: int = 500
    eval_samples: int = 256  # per selection point; against as many training images
    eval_at: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0)  # fractions of the run
    seed: int = 0


def d_loss(cfg: GANConfig, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if cfg.loss == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_loss(cfg: GANConfig, fake: torch.Tensor) -> torch.Tensor:
    if cfg.loss == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()  # non-saturating


def lr_scale(cfg: GANConfig, fraction: float) -> float:
    if fraction <= cfg.decay_from or cfg.decay_from >= 1:
        return 1.0
    return max(0.0, (1 - fraction) / (1 - cfg.decay_from))


def heldout_split(n: int, cfg: GANConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the held-out and the training images. It depends only on the image count and
    seed, so recipes (and ``bench/gan_grid.py``) see the same held-out images."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = min(n - 2, max(2, round(n * cfg.val_fraction)))
    return order[:n_val], order[n_val:]
