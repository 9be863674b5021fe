"""Train a 64x64 RGB image GAN to a time budget and publish its generator as an ONNX
``image_generator``, optionally conditioned on a tag per image.

The recipe is tuned for minutes of CPU, where the number of updates is what runs out:
DCGAN networks (batch norm in both, non-saturating loss) run in bfloat16 where the CPU has it,
conditioned on self-conditioning modes (``gan_modes``), batch 16, learning rates 1e-3 that
decay linearly to 0 over the second half of whichever limit (steps or seconds) ends first,
DiffAugment colour + translation + cutout on real and fake images (the discriminator otherwise
memorises the few thousand images and the run stalls), an exponential moving average (EMA) of
the generator, and the best EMA of a few scored points of the run exported, since GAN quality
does not rise monotonically. Spectral norm + hinge loss is an option;
``docs/image-generator.md`` has the measurements behind each choice.

The config and one training step are in ``gan_recipe``, networks and augmentation in
``gan_models``, the quality measures in ``gan_metrics``, the ONNX export in ``gan_export``.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from shared.inference.manifest import Manifest
from workers.training.checkpoints import (
    ProgressFn,
    StopFn,
    TrainingCancelled,
    load_checkpoint,
    save_checkpoint,
)
from workers.training.gan_critic import build_critic
from workers.training.gan_export import (
    export_image_generator,
    export_onnx,
)
from workers.training.gan_metrics import (
    FALLBACK_EMBEDDING,
    EmbedFn,
    FeatureFn,
    embed_only,
    fallback_embed,
    features_of,
    frechet_distance,
    quality_metrics,
    sample,
)
from workers.training.gan_models import (
    Discriminator,
    Generator,
    images_to_tensor,
    init_weights,
    random_flip,
    tensor_to_images,
    to_channels_last,
    translate,
)
from workers.training.gan_modes import split_modes
from workers.training.gan_recipe import (
    GANConfig,
    amp_enabled,
    batch_sampler,
    check_inputs,
    heldout_split,
    lr_scale,
    train_step,
)
from workers.training.schedule import Schedule

__all__ = [
    "Discriminator",
    "GANConfig",
    "Generator",
    "TrainingCancelled",
    "export_image_generator",
    "export_onnx",
    "frechet_distance",
    "images_to_tensor",
    "tensor_to_images",
    "train_image_generator",
    "translate",
]

CHECKPOINT_FILE = "image_generator.ckpt"
CHECKPOINT_FORMAT = 2
SERVING_FIELDS = frozenset({"tag_candidates", "tag_proposal", "critic", "critic_steps"})
# bench/bench_generator_speed.py times one step with the networks and these.
_init_weights = init_weights


def _fingerprint(
    data: torch.Tensor,
    labels: torch.Tensor | None,
    cfg: GANConfig,
    steps: int | None,
    budget_s: float | None,
) -> str:
    h = hashlib.sha256()
    h.update((data.numpy() * 127.5).round().astype(np.int16).tobytes())
    if labels is not None:
        h.update(labels.numpy().tobytes())
    # Serving and critic fields do not change the GAN's training: a run resumes across them.
    training = {k: v for k, v in asdict(cfg).items() if k not in SERVING_FIELDS}
    h.update(repr((training, steps, budget_s, CHECKPOINT_FORMAT)).encode())
    return h.hexdigest()


def train_image_generator(
    images: Sequence[Image.Image],
    models_dir: Path,
    name: str,
    version: str,
    *,
    steps: int | None = None,
    budget_s: float | None = None,
    labels: Sequence[int] | None = None,
    label_names: Sequence[str] | None = None,
    config: GANConfig | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 200,
    log_every: int = 50,
    embed: EmbedFn | None = None,
    features: FeatureFn | None = None,
    embed_name: str | None = None,
    threads: int | None = None,
    license: str = "",
    attribution: str = "",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Train until ``steps`` updates or ``budget_s`` seconds, whichever comes first (at least
    one must be given), export the best EMA generator to ONNX, publish.

    ``labels`` (a tag index per image, names in ``label_names``) make the GAN conditional: the
    ONNX model then takes an int64 ``label`` per latent. ``features`` maps PIL images to
    embeddings and top-1 labels (``gan_metrics.tagger_features`` of the image tagger); ``embed``
    gives embeddings only; with neither a colour embedding is used and the metrics say so.
    Resume, cancellation and checkpoints work as in
    :func:`workers.training.rnn.train_text_generator`; budget seconds count training and the
    selection evaluations, not the final metrics or the export.
    """
    cfg = config or GANConfig()
    check_inputs(cfg, steps, budget_s, len(images), labels, label_names)
    progress = progress or (lambda _: None)
    should_stop = should_stop or (lambda: False)
    if threads:
        torch.set_num_threads(threads)
    feature_fn = features or embed_only(embed or fallback_embed)
    if features is None and embed is None:
        embed_name = None
    policy = tuple(filter(None, cfg.augment.split(",")))

    data = images_to_tensor(images)
    y_all = torch.as_tensor(list(labels), dtype=torch.long) if labels is not None else None
    names = list(label_names or []) if y_all is not None else []
    val_idx, train_idx = heldout_split(len(data), cfg)
    heldout, train = data[val_idx], data[train_idx]
    y_val = y_all[val_idx] if y_all is not None else None
    y_train = y_all[train_idx] if y_all is not None else None
    # The networks' classes: the tags, or with ``cfg.mode_size`` clusters within them
    # (self-conditioning, gan_modes).
    y_cls, mode_tag = y_train, None
    if cfg.mode_size and (n_modes := len(train) // cfg.mode_size) >= 2:
        y_cls, mode_tag = split_modes(train, y_train, n_modes, cfg.seed, cfg.min_modes_per_tag)
    n_classes = len(mode_tag) if mode_tag is not None else len(names)
    fingerprint = _fingerprint(data, y_all, cfg, steps, budget_s)
    schedule = Schedule(steps, budget_s)

    torch.manual_seed(cfg.seed)
    gen = Generator(
        cfg.latent,
        cfg.ngf,
        n_classes,
        cfg.class_dim,
        train.mean(0) if cfg.mean_bias else None,
        cond_bn=cfg.cond_bn,
        upsample_rgb=cfg.upsample_rgb,
    )
    # The auxiliary classifier learns the tags themselves, not the modes within them.
    n_aux = len(names) if cfg.aux_tag > 0 and len(names) >= 2 else 0
    disc = Discriminator(cfg.ndf, cfg.spectral_norm, n_classes, cfg.mbstd, n_aux, cfg.aux_twin)
    aux_weights = torch.tensor([float(n not in cfg.aux_skip) for n in names]) if n_aux else None
    gen.apply(init_weights)
    disc.apply(init_weights)
    if cfg.channels_last:
        to_channels_last(gen, disc)
        train = train.contiguous(memory_format=torch.channels_last)
    use_amp = amp_enabled(cfg)
    ema = copy.deepcopy(gen).eval()
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=betas)

    ckpt_path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir else None
    state = load_checkpoint(ckpt_path) if ckpt_path else None
    step, elapsed, history, best = 0, 0.0, [], copy.deepcopy(ema.state_dict())
    evals_done = 0  # eval points passed; several passed in one step are one evaluation
    if state is not None and state.get("fingerprint") == fingerprint:
        gen.load_state_dict(state["gen"])
        disc.load_state_dict(state["disc"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step, elapsed = state["step"], state["elapsed"]
        history, best = list(state["history"]), state["best"]
        evals_done = state["evals_done"]
        progress({"event": "resumed", "step": step})
    elif state is not None:
        progress({"event": "checkpoint_ignored", "reason": "different data or config"})

    # Selection compares with training images, so the reported held-out figures are not the
    # ones the best generator was picked on.
    n_select = min(cfg.eval_samples, len(train))
    select_ref = features_of(
        feature_fn,
        train[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))][:n_select],
    )
    progress(
        {
            "event": "start",
            "steps": steps,
            "budget_s": budget_s,
            "train_images": len(train),
            "heldout_images": len(heldout),
            "tags": names,
        }
    )

    def checkpoint() -> None:
        if ckpt_path is not None:
            save_checkpoint(
                {
                    "fingerprint": fingerprint,
                    "gen": gen.state_dict(),
                    "disc": disc.state_dict(),
                    "ema": ema.state_dict(),
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "step": step,
                    "elapsed": elapsed,
                    "history": history,
                    "best": best,
                    "evals_done": evals_done,
                },
                ckpt_path,
            )

    def evaluate(fraction: float) -> None:
        nonlocal best
        fid = frechet_distance(
            features_of(feature_fn, sample(ema, n_select, y_cls, cfg.seed + 5, cfg.latent))[0],
            select_ref[0],
        )
        if all(fid < h["fid_vs_train"] for h in history):
            best = copy.deepcopy(ema.state_dict())
        history.append(
            {"step": step, "fraction": round(fraction, 3), "fid_vs_train": fid, "at_s": running()}
        )
        progress({"event": "eval", "step": step, "fid_vs_train": fid, "fraction": fraction})

    bs = min(cfg.batch_size, len(train))
    draw = batch_sampler(cfg, y_train, len(train))
    t_last = time.perf_counter()

    def running() -> float:
        return elapsed + time.perf_counter() - t_last

    sums: dict[str, float] = {}
    n_sums = 0
    while not schedule.done(step, running()):
        if should_stop():
            elapsed += time.perf_counter() - t_last
            checkpoint()
            raise TrainingCancelled(step, ckpt_path or Path())
        gen.train()
        disc.train()
        scale = lr_scale(cfg, schedule.fraction(step, running()))
        for opt, lr in ((opt_g, cfg.lr_g), (opt_d, cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * scale
        # Everything random in a step comes from a generator seeded by the step number, so a
        # resumed run continues exactly as the interrupted one would have.
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = draw(bs, g)
        real = random_flip(train[idx], g)
        z = torch.randn(bs, cfg.latent, generator=g)
        y_real = y_fake = t_real = t_fake = None
        if y_cls is not None:
            # Fake labels follow the real images' label frequencies.
            fake_idx = draw(bs, g)
            y_real, y_fake = y_cls[idx], y_cls[fake_idx]
            if y_train is not None:
                t_real, t_fake = y_train[idx], y_train[fake_idx]
        losses = train_step(
            cfg, gen, disc, opt_g, opt_d, real, z, y_real, y_fake, g, policy, amp=use_amp,
            t_real=t_real, t_fake=t_fake, aux_weights=aux_weights,
        )  # fmt: skip
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))  # warm-up: early EMA tracks G
            for pe, p in zip(ema.parameters(), gen.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
            for be, b in zip(ema.buffers(), gen.buffers(), strict=True):
                be.copy_(b)
        step += 1
        n_sums += 1
        for key, v in losses.items():
            sums[key] = sums.get(key, 0.0) + v
        fraction = schedule.fraction(step, running())
        if step % log_every == 0 or fraction >= 1.0:
            progress(
                {
                    "event": "step",
                    "step": step,
                    "steps": steps,
                    "fraction": fraction,
                    **{m: v / n_sums for m, v in sums.items()},
                }
            )
            sums, n_sums = {}, 0
        if (passed := sum(f <= fraction for f in cfg.eval_at)) > evals_done:
            evaluate(fraction)
            evals_done = passed
        if step % checkpoint_every == 0:
            now = time.perf_counter()
            elapsed, t_last = elapsed + now - t_last, now
            checkpoint()
    elapsed += time.perf_counter() - t_last
    if not history:  # eval_at empty, or resumed past the last point: score the final EMA
        evaluate(1.0)
    checkpoint()

    progress({"event": "evaluating", "step": step})
    t_eval = time.perf_counter()
    ema.load_state_dict(best)
    quality = quality_metrics(
        ema, train, heldout, feature_fn, min(cfg.fid_samples, 10 * len(heldout)), cfg.seed,
        train_labels=y_cls, heldout_labels=y_val, label_names=names,
        tag_pools=None if y_train is None or y_cls is None else [
            y_cls[y_train == k] for k in range(len(names))
        ],
        train_tags=y_train,
    )  # fmt: skip
    best_at = min(range(len(history)), key=lambda i: history[i]["fid_vs_train"])
    steps_per_epoch = max(1, len(train) / bs)
    metrics = {
        **quality,
        "fid_embedding": embed_name if embed_name else FALLBACK_EMBEDDING,
        "fid_samples": min(cfg.fid_samples, 10 * len(heldout)),
        "fid_reference": f"{len(heldout)} held-out real images",
        "pr_neighbours": 3,
        "concept_share_definition": (
            "share of images whose top-1 image-tagger label is among the top-1 labels of the "
            "held-out real images"
        ),
        "concept_overlap_definition": (
            "sum over top-1 image-tagger labels of min(share among these images, share among "
            "the held-out real images)"
        ),
        "selection": history,
        "selected_step": history[best_at]["step"],
        "eval_time_s": round(time.perf_counter() - t_eval, 1),
        "train_time_s": round(elapsed, 1),
        "budget_s": budget_s,
        "steps": step,
        "epochs": round(step / steps_per_epoch, 2),
        "train_images": len(train),
        "heldout_images": len(heldout),
        "threads": torch.get_num_threads(),
    }
    critic, critic_metrics = build_critic(
        cfg, disc, ema, train, y_train, y_cls, heldout, y_val, len(names), progress
    )
    metrics |= critic_metrics
    progress({"event": "done", **{k: v for k, v in metrics.items() if isinstance(v, int | float)}})
    mode_counts = None
    if mode_tag is not None and y_cls is not None:
        mode_counts = torch.bincount(y_cls, minlength=n_classes).tolist()
    weights = torch.bincount(y_all, minlength=len(names)).tolist() if y_all is not None else []
    manifest = export_image_generator(
        ema, cfg, models_dir, name, version, metrics=metrics, tags=names, tag_counts=weights,
        modes=mode_tag, mode_counts=mode_counts,
        license=license, attribution=attribution, extra=extra, overwrite=overwrite,
        critic=critic,
    )  # fmt: skip
    if ckpt_path is not None:
        ckpt_path.unlink(missing_ok=True)
    return manifest
