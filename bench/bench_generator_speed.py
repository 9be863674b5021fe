"""Generator throughput, side by side on one machine: ours, raw onnxruntime, torch eager.

    python bench/bench_generator_speed.py [--repeats 5] [--length 200] [--threads 1]

Text: generated characters per second at batch 1 and 16 for ``TextGenerator.generate``, a bare
ORT step loop and a torch eager step loop, all sampling at temperature 1 from the same weights.
Images: images/s at batch 16 for ``ImageGenerator.generate`` (latents + run + PIL images), bare
``session.run`` and the torch eager generator. Training: seconds per epoch of the default
configurations on the default corpora, from timed steps. Figures are medians of ``--repeats``.

The models are the default architectures with seeded random weights, so the bench needs no
built models and torch and ORT run the same weights. The end-of-text logit is pushed down so no
sample stops early: every path generates exactly ``--length`` characters per sample.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model
from shared.inference.session import create_session
from workers.generation.image import ImageGenerator
from workers.generation.text import TextGenerator
from workers.training import gan, rnn
from workers.training.build.image_generator import openmoji_svgs
from workers.training.build.text_generator import load_fortunes
from workers.training.gan_models import to_channels_last
from workers.training.gan_recipe import train_step
from workers.training.text_data import stream_layout


def median_time(fn: Callable[[], object], repeats: int) -> float:
    return median_times({"": fn}, repeats)[""]


def median_times(fns: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call. Repeats take turns across ``fns``, so a burst of load from
    another process on this shared machine hits every contender, not just one."""
    for fn in fns.values():
        fn()  # warm-up: first ORT/torch calls allocate
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def ort_text_loop(sess: ort.InferenceSession, cfg: rnn.RNNConfig, n: int, length: int) -> None:
    rng = np.random.default_rng(0)
    h = np.zeros((cfg.layers, n, cfg.hidden), np.float32)
    tok = np.zeros((n, 1), np.int64)
    for _ in range(length):
        logits, h = sess.run(None, {"tokens": tok, "h0": h})
        p = np.exp(logits[:, -1] - logits[:, -1].max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        tok = (cdf < rng.random((n, 1)) * cdf[:, -1:]).sum(axis=1, keepdims=True).astype(np.int64)


@torch.no_grad()
def torch_text_loop(model: rnn.CharGRU, cfg: rnn.RNNConfig, n: int, length: int) -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.zeros(cfg.layers, n, cfg.hidden)
    tok = torch.zeros(n, 1, dtype=torch.long)
    for _ in range(length):
        logits, h = model(tok, h)
        tok = torch.multinomial(torch.softmax(logits[:, -1], dim=-1), 1, generator=g)


def text_train_step_time(cfg: rnn.RNNConfig, repeats: int) -> float:
    model = rnn.CharGRU(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    xy = torch.randint(1, 256, (cfg.batch_size, cfg.seq_len + 1))
    h0 = torch.zeros(cfg.layers, cfg.batch_size, cfg.hidden)

    def step() -> None:
        logits, _ = model(xy[:, :-1], h0)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), xy[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()

    return median_time(step, repeats)


def gan_train_step(cfg: gan.GANConfig, *, amp: bool) -> Callable[[], None]:
    """One step of ``train_image_generator`` (the same ``train_step``), conditional on six
    tags as the bundled model, in bfloat16 autocast or float32."""
    classes = 6
    g_net = gan.Generator(cfg.latent, cfg.ngf, classes, cond_bn=cfg.cond_bn)
    d_net = gan.Discriminator(cfg.ndf, cfg.spectral_norm, classes, cfg.mbstd)
    real = torch.rand(cfg.batch_size, 3, 64, 64) * 2 - 1
    if cfg.channels_last:
        to_channels_last(g_net, d_net)
        real = real.contiguous(memory_format=torch.channels_last)
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.Adam(g_net.parameters(), lr=cfg.lr_g, betas=betas)
    opt_d = torch.optim.Adam(d_net.parameters(), lr=cfg.lr_d, betas=betas)
    gen = torch.Generator().manual_seed(0)
    policy = tuple(filter(None, cfg.augment.split(",")))

    def step() -> None:
        y = torch.randint(0, classes, (cfg.batch_size,), generator=gen)
        z = torch.randn(cfg.batch_size, cfg.latent, generator=gen)
        train_step(cfg, g_net, d_net, opt_g, opt_d, real, z, y, y, gen, policy, amp=amp)

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"CPU: {cpu_model()} ({len(os.sched_getaffinity(0))} cores available)")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, onnxruntime "
        f"{ort.__version__}, torch {torch.__version__}; threads: {args.threads} (ORT and torch)"
    )
    print(f"medians of {args.repeats} repeats after one warm-up\n")

    tmp = Path(tempfile.mkdtemp(prefix="bench_generator_speed."))
    # ---- text
    tcfg = rnn.RNNConfig()
    model = rnn.CharGRU(tcfg).eval()
    with torch.no_grad():
        model.head.bias[rnn.EOS] = -30.0  # no sample ends early: equal work on every path
    rnn.export_text_generator(model, tcfg, tmp, "tg", "bench", metrics={})
    ours = TextGenerator(tmp / "tg" / "bench", threads=args.threads)
    sess = create_session(tmp / "tg" / "bench" / "model.onnx", threads=args.threads)
    n_len = args.length
    print(f"text generator (GRU {tcfg.layers}x{tcfg.hidden}, {n_len} chars per sample), chars/s:")
    print(f"  {'batch':>5}  {'ours':>9}  {'raw ORT':>9}  {'torch':>9}  ours/raw  ours/torch")
    for n in (1, 16):
        chars = n * n_len
        t_ours = median_time(
            lambda n=n: ours.generate("", n=n, max_length=n_len, seed=1), args.repeats
        )
        t_raw = median_time(lambda n=n: ort_text_loop(sess, tcfg, n, n_len), args.repeats)
        t_torch = median_time(lambda n=n: torch_text_loop(model, tcfg, n, n_len), args.repeats)
        print(
            f"  {n:>5}  {chars / t_ours:>9.0f}  {chars / t_raw:>9.0f}  {chars / t_torch:>9.0f}"
            f"  {t_raw / t_ours:>8.2f}  {t_torch / t_ours:>10.2f}"
        )
    prompt = "The quick brown fox jumps over the lazy dog. " * 10
    t_prime = median_time(lambda: ours.generate(prompt, max_length=1, seed=1), args.repeats)
    print(f"  priming a {len(prompt)}-char prompt (one ORT call): {t_prime * 1000:.1f} ms")

    # ---- images
    icfg = gan.GANConfig()
    g_net = gan.Generator(icfg.latent, icfg.ngf)
    g_net.apply(gan._init_weights)
    g_net.eval()
    gan.export_image_generator(g_net, icfg, tmp, "ig", "bench", metrics={})
    igen = ImageGenerator(tmp / "ig" / "bench", threads=args.threads)
    isess = create_session(tmp / "ig" / "bench" / "model.onnx", threads=args.threads)
    batch = 16
    z = np.random.default_rng(0).standard_normal((batch, icfg.latent)).astype(np.float32)
    zt = torch.from_numpy(z)
    with torch.no_grad():
        t = median_times(
            {
                "ours": lambda: igen.generate(batch, seed=1),
                "raw": lambda: isess.run(None, {"z": z}),
                "torch": lambda: g_net(zt),
            },
            args.repeats,
        )
    t_ours, t_raw, t_torch = t["ours"], t["raw"], t["torch"]
    print(f"\nimage generator (DCGAN ngf={icfg.ngf}, 64x64), batch {batch}, images/s:")
    print(f"  {'ours':>9}  {'raw ORT':>9}  {'torch':>9}  ours/raw  ours/torch")
    print(
        f"  {batch / t_ours:>9.1f}  {batch / t_raw:>9.1f}  {batch / t_torch:>9.1f}"
        f"  {t_raw / t_ours:>8.2f}  {t_torch / t_ours:>10.2f}"
    )

    # ---- training
    texts = load_fortunes()
    train, _ = rnn.split_texts(texts, tcfg.val_fraction, tcfg.seed)
    n_bytes = len(rnn.encode_documents(train))
    _, steps_per_epoch = stream_layout(n_bytes, tcfg.batch_size, tcfg.seq_len)
    t_step = text_train_step_time(tcfg, args.repeats)
    n_icons = len(openmoji_svgs())
    gan_steps = max(1, round(n_icons * (1 - icfg.val_fraction) / icfg.batch_size))
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    steps = {"float32": gan_train_step(icfg, amp=False)}
    if bf16:
        steps["bfloat16"] = gan_train_step(icfg, amp=True)
    t_g = median_times(steps, args.repeats)
    t_gstep, t_gstep_bf16 = t_g["float32"], t_g.get("bfloat16")
    print("\ntraining (default configs, torch CPU):")
    print(
        f"  text: {t_step:.3f} s/step (batch {tcfg.batch_size}x{tcfg.seq_len}) x {steps_per_epoch}"
        f" steps/epoch ({n_bytes / 1e6:.2f} MB) = {t_step * steps_per_epoch:.0f} s/epoch"
    )
    print(
        f"  image: {t_gstep:.3f} s/step (batch {icfg.batch_size}) x {gan_steps} steps/epoch"
        f" ({n_icons} icons, 10% held out) = {t_gstep * gan_steps:.0f} s/epoch"
    )
    if t_gstep_bf16 is None:
        print("  image, bfloat16 autocast: not timed (this CPU has no native bfloat16)")
    else:
        print(
            f"  image, bfloat16 autocast (amp='auto' picks it here): {t_gstep_bf16:.3f} s/step"
            f" = {t_gstep / t_gstep_bf16:.2f}x the float32 steps per second"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
