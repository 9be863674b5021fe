"""The GAN's recipe: its configuration, losses and learning-rate decay (docs/image-generator.md
has the measurements behind each default)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from workers.training.gan_models import AUGMENTS, LATENT, Discriminator, Generator, augment
from workers.training.schedule import check_limits


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
    # Self-conditioning (gan_modes): condition on thumbnail clusters within the tags, one per
    # about this many training images, instead of on the tags themselves; 0 = off.
    mode_size: int = 48
    # Self-conditioning: at least this many modes per tag. A small tag of unlike drawings
    # (keycaps, red squares, arrows, moons) gets a mode for each kind, not three mixtures.
    min_modes_per_tag: int = 1
    mbstd: bool = False  # D sees the batch's feature spread (ProGAN's minibatch stddev)
    feature_match: float = 0.0  # weight of feature matching (D's pooled features) in G's loss
    # Weight of the auxiliary tag classifier (conditional models): D learns the tag of real
    # images from its pooled features, and G's loss adds the classifier's cross-entropy of
    # each fake against its asked tag, so a tag's images carry what tells the tag apart.
    aux_tag: float = 0.0
    # With aux_tag: a twin classifier learns the tags of G's images, and G's auxiliary loss
    # subtracts its cross-entropy (TAC-GAN), so G matches each tag's spread, not its mode.
    aux_twin: bool = False
    # Tags whose fakes the auxiliary classifier does not steer (G's auxiliary loss skips them).
    aux_skip: tuple[str, ...] = ()
    # Conditional models: training draws a tag of n images with weight n ** tag_temper (real
    # images and fake labels alike, so D still sees the same tags on both sides); 1 = as in
    # the data, 0 = every tag equally often. A small tag gets more of G's updates; serving
    # still draws untagged requests' tags with the data's frequencies.
    tag_temper: float = 1.0
    # Serving: an image asked with a tag is one of this many drawings, drawn
    # with weight p(tag | image) by a tag classifier published beside the generator as its
    # critic (``critic`` below); 1 = off. The drawings come from every mode (tag_proposal "all":
    # the untagged generator) or from the tag's modes ("tag").
    tag_candidates: int = 1
    tag_proposal: str = "all"
    # Which network is the critic: "disc", the discriminator's auxiliary tag classifier (needs
    # aux_tag), "own", a tag classifier of its own trained on the training icons after the
    # GAN (gan_critic), for critic_steps updates, or "both", the two averaged.
    critic: str = "disc"
    critic_steps: int = 2_000
    upsample_rgb: bool = True  # G's last layer: upsample + 3x3 conv, not a transposed conv
    mean_bias: bool = False  # G adds a learned image, started at the data mean, before its tanh
    # Mixed precision: "bf16" runs the networks' forward passes under bfloat16 autocast (the
    # weights, optimiser and EMA stay float32), "off" in float32, "auto" bf16 where the CPU has
    # native bfloat16 (AVX512-BF16 or AMX), where it is much faster; elsewhere bf16 is emulated.
    amp: str = "auto"
    channels_last: bool = True  # NHWC tensors: the layout oneDNN's convolutions run fastest in
    val_fraction: float = 0.1
    fid_samples: int = 500
    eval_samples: int = 256  # per selection point; against as many training images
    eval_at: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0)  # fractions of the run
    seed: int = 0


def check_inputs(
    cfg: GANConfig,
    steps: int | None,
    budget_s: float | None,
    n_images: int,
    labels: Sequence[int] | None,
    label_names: Sequence[str] | None,
) -> None:
    """ValueError naming what is wrong with a training request, before any work."""
    check_limits("steps", steps, budget_s)
    if cfg.loss not in ("hinge", "bce"):
        raise ValueError("loss must be 'hinge' or 'bce'")
    if cfg.mode_size < 0:
        raise ValueError("mode_size must be >= 0")
    if cfg.min_modes_per_tag < 1:
        raise ValueError("min_modes_per_tag must be >= 1")
    if cfg.tag_candidates < 1:
        raise ValueError("tag_candidates must be >= 1")
    if cfg.tag_proposal not in ("all", "tag"):
        raise ValueError("tag_proposal must be 'all' or 'tag'")
    if cfg.critic not in ("disc", "own", "both"):
        raise ValueError("critic must be 'disc', 'own' or 'both'")
    if cfg.critic_steps < 1:
        raise ValueError("critic_steps must be >= 1")
    if cfg.aux_tag < 0:
        raise ValueError("aux_tag must be >= 0")
    if not 0 <= cfg.tag_temper <= 1:
        raise ValueError("tag_temper must be in [0, 1]")
    if cfg.amp not in ("auto", "bf16", "off"):
        raise ValueError("amp must be 'auto', 'bf16' or 'off'")
    if unknown := set(filter(None, cfg.augment.split(","))) - set(AUGMENTS):
        raise ValueError(f"unknown augmentations {sorted(unknown)}; known: {AUGMENTS}")
    if n_images < 4:
        raise ValueError("need at least 4 images (some are held out for the quality metric)")
    if labels is not None:
        if len(labels) != n_images:
            raise ValueError(f"{len(labels)} labels for {n_images} images")
        if not label_names or len(set(label_names)) != len(label_names):
            raise ValueError("labels need label_names, one distinct name per label index")
        if min(labels) < 0 or max(labels) >= len(label_names):
            raise ValueError(f"labels must be in 0..{len(label_names) - 1}")
        if unknown := set(cfg.aux_skip) - set(label_names):
            raise ValueError(f"aux_skip names unknown tags {sorted(unknown)}")


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


def amp_enabled(cfg: GANConfig) -> bool:
    if cfg.amp == "auto":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return cfg.amp == "bf16"


def heldout_split(n: int, cfg: GANConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the held-out and the training images. It depends only on the image count and
    seed, so recipes (and ``bench/gan_grid.py``) see the same held-out images."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = min(n - 2, max(2, round(n * cfg.val_fraction)))
    return order[:n_val], order[n_val:]


def batch_sampler(
    cfg: GANConfig, labels: torch.Tensor | None, n: int
) -> Callable[[int, torch.Generator], torch.Tensor]:
    """``draw(bs, g)``: indices of ``bs`` training images, uniform, or with ``cfg.tag_temper``
    < 1 by image weight ``count(tag) ** (tag_temper - 1)``, so a tag's share of the draws is
    proportional to ``count ** tag_temper``."""
    if labels is None or cfg.tag_temper == 1.0:
        return lambda bs, g: torch.randint(0, n, (bs,), generator=g)
    counts = torch.bincount(labels).double()
    weights = counts[labels] ** (cfg.tag_temper - 1.0)
    return lambda bs, g: torch.multinomial(weights, bs, replacement=True, generator=g)


def train_step(
    cfg: GANConfig,
    gen: Generator,
    disc: Discriminator,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    real: torch.Tensor,
    z: torch.Tensor,
    y_real: torch.Tensor | None,
    y_fake: torch.Tensor | None,
    g: torch.Generator,
    policy: Sequence[str],
    *,
    amp: bool,
    t_real: torch.Tensor | None = None,
    t_fake: torch.Tensor | None = None,
    aux_weights: torch.Tensor | None = None,
) -> dict[str, float]:
    """One update of D, then one of G, on a batch of real images and latents; every random
    draw (augmentation) comes from ``g``. ``t_real`` / ``t_fake`` are the tags of the real
    images and the fakes' asked tags, for the auxiliary classifier (``cfg.aux_tag``) when D has
    one; ``aux_weights`` (one per tag, default 1) weighs each fake's auxiliary loss by its
    asked tag. The losses and mean scores, for the progress log.
    ``bench/bench_generator_speed.py`` times this same function."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp)

    def aug(x: torch.Tensor) -> torch.Tensor:
        return augment(x, policy, cfg.translation, cfg.cutout, g)

    with autocast:
        fake = gen(z, y_fake)
        d_real, h_real = disc.score_and_features(aug(real), y_real)
        d_fake, h_fake_d = disc.score_and_features(aug(fake.detach()), y_fake)
    # Losses in float32: the scores' softplus and means are where bfloat16 would round.
    loss_d = d_loss(cfg, d_real.float(), d_fake.float())
    # The auxiliary heads, where D has them and the batch carries tags.
    head = disc.classify if cfg.aux_tag > 0 and t_real is not None and t_fake is not None else None
    twin_head = disc.classify_fake if head is not None else None
    if head is not None:
        assert t_real is not None and t_fake is not None
        cls_real = F.cross_entropy(head(h_real.float()), t_real)
        loss_d = loss_d + cfg.aux_tag * cls_real
        if twin_head is not None:
            twin_d = F.cross_entropy(twin_head(h_fake_d.float()), t_fake)
            loss_d = loss_d + cfg.aux_tag * twin_d
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()

    with autocast:
        g_score, h_fake = disc.score_and_features(aug(fake), y_fake)
    loss_g = g_loss(cfg, g_score.float())
    if cfg.feature_match:
        # Feature matching (Salimans et al. 2016) against the real batch's features from the
        # D step (one update old, and free): pulls G towards the whole data, not only past
        # D's current boundary.
        gap = h_real.detach().float().mean(0) - h_fake.float().mean(0)
        loss_g = loss_g + cfg.feature_match * gap.square().sum()
    if head is not None:
        assert t_fake is not None
        w = aux_weights[t_fake] if aux_weights is not None else torch.ones(len(t_fake))

        def weighted_ce(logits: torch.Tensor) -> torch.Tensor:
            return (F.cross_entropy(logits, t_fake, reduction="none") * w).mean()

        cls_fake = weighted_ce(head(h_fake.float()))
        loss_g = loss_g + cfg.aux_tag * cls_fake
        if twin_head is not None:
            loss_g = loss_g - cfg.aux_tag * weighted_ce(twin_head(h_fake.float()))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    out = {
        "d_loss": loss_d.item(),
        "g_loss": loss_g.item(),
        "d_real": d_real.float().mean().item(),
        "d_fake": d_fake.float().mean().item(),
    }
    if head is not None:
        out |= {"cls_real": cls_real.item(), "cls_fake": cls_fake.item()}
    if twin_head is not None:
        out["cls_twin"] = twin_d.item()
    return out
