"""The critic of tagged requests: the discriminator's tag classifier, a tag classifier of its
own, or both.

Serving answers a tagged request with one of ``k`` untagged drawings, drawn with weight
``p(tag | image)`` (``workers/generation/image.py``): the better that probability, the nearer
the served images are to the tag's own. The discriminator's auxiliary head has features shaped
by the adversarial game and one linear layer trained only while G trains. The classifier of
its own is a small CNN trained for that question alone, on the same training icons (never the
held-out ones), with label smoothing so its probabilities stay soft enough to weigh drawings
by. It is not the image tagger: the quality metrics are computed on the tagger's embedding,
and a critic on that embedding would pick images for the metric rather than for the tag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from workers.training.gan_export import DiscriminatorCritic, fake_batch_statistics
from workers.training.gan_models import Discriminator, Generator, cutout, random_flip, translate
from workers.training.gan_recipe import GANConfig


@dataclass(frozen=True)
class CriticConfig:
    width: int = 32
    steps: int = 2_000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    dropout: float = 0.3
    translation: float = 0.125
    cutout: float = 0.25
    seed: int = 0


class TagClassifier(nn.Module):
    """``image[n, 3, 64, 64]`` in [-1, 1] -> ``tag_logits[n, tags]``: the discriminator's
    shape (four stride-2 4x4 convolutions, here with batch norm throughout) and a 3x3
    convolution at 4x4, global average pooling, dropout, a linear layer. A CPU build trains it
    in minutes."""

    def __init__(self, num_tags: int, width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in (width, width * 2, width * 4, width * 8):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout)]
            layers.append(nn.LeakyReLU(0.2, True))
            cin = cout
        layers += [nn.Conv2d(cin, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU(True)]
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.classify = nn.Linear(cin, num_tags)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classify(self.drop(self.features(image).mean((2, 3))))
        return logits


def train_tag_classifier(
    images: torch.Tensor, tags: torch.Tensor, num_tags: int, cfg: CriticConfig | None = None
) -> TagClassifier:
    """Fit a :class:`TagClassifier` to ``images`` (``[n, 3, 64, 64]`` in [-1, 1]) and their tag
    indices, for ``cfg.steps`` updates of AdamW with a one-cycle learning rate; every random
    draw comes from ``cfg.seed``, so the same icons give the same classifier. Returned in eval
    mode."""
    cfg = cfg or CriticConfig()
    if len(images) != len(tags):
        raise ValueError(f"{len(tags)} tags for {len(images)} images")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = TagClassifier(num_tags, cfg.width, cfg.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
    model.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=g)
        x = random_flip(images[idx], g)
        x = cutout(translate(x, cfg.translation, g), cfg.cutout, g)
        loss = F.cross_entropy(model(x), tags[idx], label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


class MeanLogProb(nn.Module):
    """Several tag classifiers as one: the mean of their log-probabilities, as logits (a
    normalised geometric mean of their probabilities)."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logp = [F.log_softmax(net(image), dim=1) for net in self.nets]
        return torch.stack(logp).mean(0)


def build_critic(
    cfg: GANConfig,
    disc: Discriminator,
    generator: Generator,
    train: torch.Tensor,
    train_tags: torch.Tensor | None,
    train_classes: torch.Tensor | None,
    heldout: torch.Tensor,
    heldout_tags: torch.Tensor | None,
    num_tags: int,
    progress: Callable[[dict[str, Any]], None] = lambda _: None,
) -> tuple[nn.Module | None, dict[str, float]]:
    """The critic a finished run publishes (None where the config asks for none or the run
    has no tags to judge) and how often it names the tag of the held-out icons.
    ``train_classes`` are the generator's labels (tags or modes) of the training icons."""
    if cfg.tag_candidates <= 1 or num_tags < 2 or train_tags is None or train_classes is None:
        return None, {}
    nets: list[nn.Module] = []
    if cfg.critic in ("disc", "both") and disc.classify is not None:
        fake_batch_statistics(disc, generator, train_classes, cfg.seed + 7, cfg.batch_size)
        nets.append(DiscriminatorCritic(disc).eval())
    if cfg.critic in ("own", "both"):
        progress({"event": "critic", "steps": cfg.critic_steps, "images": len(train)})
        own = CriticConfig(steps=cfg.critic_steps, seed=cfg.seed)
        nets.append(train_tag_classifier(train.contiguous(), train_tags, num_tags, own))
    if not nets:
        return None, {}
    critic = nets[0] if len(nets) == 1 else MeanLogProb(nets)
    metrics: dict[str, float] = {}
    if heldout_tags is not None and len(heldout):
        with torch.no_grad():
            named = critic(heldout.float()).argmax(1)
        metrics["critic_heldout_accuracy"] = round((named == heldout_tags).float().mean().item(), 4)
    return critic, metrics
