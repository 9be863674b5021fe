"""Image tagger throughput, side by side on one machine: raw ORT, our end-to-end path, torch eager.

    python bench/bench_image_tagger.py [--repeats 5] [--images 32] [--threads 1]

Figures are images/s, the median of ``--repeats`` runs over ``--images`` images. "ours" starts
from JPEG bytes (decode + preprocess + run + postprocess), the others from preprocessed pixels,
so ours/raw shows what the Python side costs. Photos are scikit-image's, at their own size
(300-512 px) and upscaled 3x (about 1500 px, closer to CMS uploads), encoded as JPEG q90.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import PIL
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model
from shared.inference.session import create_session
from workers.tagging.image import ImageTagger, preprocess_image
from workers.training.build import image_tagger as builder

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins")


def jpeg_photos(n: int) -> list[bytes]:
    from skimage import data

    out: list[bytes] = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)())
        for scale in (1, 3):
            im = image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            out.append(buf.getvalue())
    return [out[i % len(out)] for i in range(n)]


def rate(fn: Callable[[], object], n_images: int, repeats: int) -> float:
    fn()  # warm-up: first runs allocate arenas and page in weights
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_images / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models-dir", default=os.environ.get("ATELIER_MODELS_DIR", "var/models"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    models_dir = Path(args.models_dir)
    model_dir = builder.build(models_dir, log=lambda _m: None)
    n, reps, threads = args.images, args.repeats, args.threads

    jpegs = jpeg_photos(n)
    pixels = np.stack([preprocess_image(Image.open(io.BytesIO(b))) for b in jpegs])
    session = create_session(model_dir / "model.onnx", threads=threads)
    int8_dir = models_dir / "image_tagger_int8"
    int8 = None
    if int8_dir.is_dir():
        versions = sorted(d for d in int8_dir.iterdir() if (d / "manifest.json").is_file())
        if versions:
            int8 = create_session(versions[-1] / "model.onnx", threads=threads)

    try:
        import torch

        from workers.training.efficientnet_lite import load_pretrained

        torch.set_num_threads(threads)
        net = load_pretrained()
        tensor = torch.from_numpy(pixels)
    except ImportError:
        torch = None  # type: ignore[assignment]

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores visible)")
    versions = f"python {platform.python_version()}, onnxruntime {ort.__version__}, "
    versions += f"numpy {np.__version__}, pillow {PIL.__version__}"
    if torch is not None:
        versions += f", torch {torch.__version__}"
    print(versions)
    sizes = sorted({Image.open(io.BytesIO(b)).size for b in jpegs})
    print(f"{n} JPEGs from {len(set(jpegs))} photos, sizes {sizes[0]}..{sizes[-1]}")
    print(f"threads {threads}, median of {reps} repeats, images/s")
    print()
    header = f"{'batch':>5} {'raw ORT':>9} {'ours e2e':>9} {'decode+pre':>10} {'torch':>9}"
    header += f" {'int8 ORT':>9} {'ours/raw':>8} {'ORT/torch':>9}"
    print(header)

    for batch in (1, 32):
        tagger = ImageTagger(model_dir, threads=threads, max_batch=batch)

        def run_raw(sess: ort.InferenceSession = session, b: int = batch) -> None:
            for i in range(0, n, b):
                sess.run(None, {"pixels": pixels[i : i + b]})

        def run_ours(t: ImageTagger = tagger) -> None:
            t.predict([Image.open(io.BytesIO(b)) for b in jpegs])

        def run_pre(t: ImageTagger = tagger) -> None:
            for b in jpegs:
                t.preprocess(Image.open(io.BytesIO(b)))

        raw = rate(run_raw, n, reps)
        ours = rate(run_ours, n, reps)
        pre = rate(run_pre, n, reps)
        q8 = rate(lambda b=batch: run_raw(int8, b), n, reps) if int8 is not None else float("nan")
        if torch is not None:

            def run_torch(b: int = batch) -> None:
                with torch.inference_mode():
                    for i in range(0, n, b):
                        net(tensor[i : i + b])

            eager = rate(run_torch, n, reps)
        else:
            eager = float("nan")
        print(
            f"{batch:>5} {raw:>9.1f} {ours:>9.1f} {pre:>10.1f} {eager:>9.1f} {q8:>9.1f}"
            f" {ours / raw:>8.2f} {raw / eager:>9.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
