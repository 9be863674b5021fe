"""Tagging throughput, side by side in one run: raw ORT, the worker function, end to end, torch.

    python bench/bench_tagging_e2e.py [--texts 64] [--images 32] [--repeats 3] [--scales 1,3]
        [--redis redis://127.0.0.1:6379/13] [--redis-slots redis://127.0.0.1:6379/8]
        [--worker-processes 2] [--in-flight 6] [--db sqlite|postgresql] [--no-torch]

For texts and for images, every repeat runs each path once, in turn, so that load from other
processes on a shared machine falls on every path alike; figures are items/s, median (min-max).

- "raw ORT": ``session.run`` on inputs already preprocessed, at the worker's batch size (32) and
  one intra-op thread. Texts: the documents' token windows (as ``embed_documents`` cuts them),
  grouped into the runs the embedder makes (``plan_batches``: length-sorted, at most 32 a run,
  cut where padding would cost more than another run), and padded; the "fixed batches of 32"
  row is the same windows in plain sorted batches of 32, what the embedder did before it
  planned its runs. A further row adds the batch's distinct keyphrase candidates, which the
  text tagger also embeds, so it is the model work one tagging job really does. Images:
  decoded, resized and normalised pixels.
- "torch eager": the same model in PyTorch on the same inputs (the same runs of documents, and
  of documents + candidates / pixels), when torch is installed (the ``train`` extra).
- "worker fn": ``workers.tagging.pipeline.tag_items`` called in this process on fresh rows of a
  throw-away database (near-duplicates, inference, tags and embeddings stored). Image rows
  are made as the gateway makes them, with the working copy, thumbnail and pHash it derives from
  its one decode of the upload (untimed here: that cost is in the "upload" row); the "original
  only" row is the fallback for images without them (generated images, re-tagging): decode the
  original, thumbnail, pHash, then the same.
- "end to end": wall time from the batch upload (``POST /v1/content:batch``) until the job has
  stored every tag, with a real Celery worker process (one process, one ORT thread); "upload" is
  the part spent in the POST itself, and a line below splits the rest (queue pickup, job run,
  client noticing). "batches in flight" posts six batches back to back and waits for all: the
  gateway and the worker are separate processes, so upload and tagging overlap, as in a bulk
  import (only the first upload is not overlapped). The worker process is pinned to one core;
  the gateway runs in this process and may use every core, the worker's included, except in the
  rows marked "gateway off the worker's core", where this process keeps to the other cores, as
  a gateway on machines of its own would. The rows marked "N worker processes sharing 1
  inference slot" go to a second worker (its own broker, its own gateway app; each worker idles
  while the other's rows run): ``--worker-processes`` processes, nothing pinned, whose model
  runs take turns in one slot (shared/inference/slots.py), so the model still runs once at a
  time on one thread, as in the raw rows, while one process's database and file work overlaps
  another's inference. Workers are warmed up first, so model loading is not counted.

For MiniLM a last line gives GFLOP/s on one core (raw ORT and torch eager) beside one bare fp32
MatMul in onnxruntime at the model's FFN shape: the most a core gives matrix products, against
which "1.5x torch eager" can be checked.

Texts are unique sentences, sentence pairs and paragraphs from scikit-learn's bundled dataset
descriptions (as in ``bench_text_tagger.py``): repeated texts would flatter anything that shares
work across identical inputs. Photos are scikit-image's, each copy cropped differently, encoded
as JPEG q90, at their own size (300-640 px) and at each of ``--scales`` (3: ~1500 px, closer to
CMS uploads). Every batch is uploaded by a tenant of its own: in one tenant, each copy of the
same four photos would be a near-duplicate of every earlier one, and its lookup would read them
all, which a tenant of real photos never asks for.
"""

from __future__ import annotations

import argparse
import contextlib
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import io
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_text_tagger import batches, corpus  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from sqlalchemy import select  # noqa: E402

from services.gateway.main import create_app  # noqa: E402
from shared.auth import create_api_key, create_tenant  # noqa: E402
from shared.config import GatewaySettings, WorkerSettings  # noqa: E402
from shared.db.models import Asset, ContentItem, ContentKind  # noqa: E402
from shared.db.scratch import scratch_url  # noqa: E402
from shared.db.session import session_scope  # noqa: E402
from shared.imaging import decode_image, make_renditions  # noqa: E402
from shared.inference.registry import ModelRegistry  # noqa: E402
from shared.inference.session import create_session  # noqa: E402
from workers.context import WorkerContext  # noqa: E402
from workers.tagging.image import ImageTagger  # noqa: E402
from workers.tagging.pipeline import tag_items  # noqa: E402
from workers.tagging.text import (  # noqa: E402
    MAX_DOCUMENT_CHUNKS,
    TextEmbedder,
    keyphrase_candidates,
)
from workers.tagging.text_batching import padded_runs  # noqa: E402

BATCH = 32


def _photos(n: int, scale: int) -> list[bytes]:
    from skimage import data

    base = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    out = []
    for i in range(n):
        im = Image.fromarray(base[i % len(base)])
        if scale != 1:
            im = im.resize((im.width * scale, im.height * scale), Image.Resampling.BICUBIC)
        # A different crop per copy, so the pHash/duplicate path sees distinct images.
        w, h = im.size
        im = im.crop((i % 7, i % 5, w - i % 3, h - i % 4))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _batches(seqs: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The padded runs the embedder makes of ``seqs``."""
    return [(ids, mask) for _, ids, mask in padded_runs(seqs, max_batch=BATCH)]


def _document_windows(embedder: TextEmbedder, texts: list[str]) -> list[list[int]]:
    """The token windows ``embed_documents`` runs for these texts."""
    windows = []
    for enc in embedder.tokenizer.encode_batch(texts):
        windows += [part.ids for part in [enc, *enc.overflowing][:MAX_DOCUMENT_CHUNKS]]
    return windows


def _minilm_flops(batch: int, length: int, d: int = 384, layers: int = 6) -> float:
    dense = 2 * (4 * d * d + 2 * d * 4 * d)  # Q, K, V, output projections and the FFN
    attention = 2 * 2 * length * d  # scores and the weighted sum
    return float(batch * length * layers * (dense + attention))


def _gemm_peak(tokens: int = 1152, d: int = 384, repeats: int = 9) -> float | None:
    """GFLOP/s of one bare fp32 MatMul in onnxruntime on one thread, at the shape of MiniLM's
    FFN over a batch (tokens x 384 x 1536): what one core gives a transformer's matrix products
    at most (None without the ``onnx`` package, which the train extra installs)."""
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    a = rng.standard_normal((tokens, d)).astype(np.float32)
    b = rng.standard_normal((d, 4 * d)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])],
        "ffn",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [tokens, d])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [tokens, 4 * d])],
        [helper.make_tensor("B", TensorProto.FLOAT, [d, 4 * d], b.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matmul.onnx"
        path.write_bytes(model.SerializeToString())
        # The session options every served model gets (shared/inference/session.py).
        sess = create_session(path, threads=1)
    sess.run(None, {"A": a})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"A": a})
        times.append(time.perf_counter() - t0)
    return 2 * tokens * d * 4 * d / statistics.median(times) / 1e9


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _wait(client: TestClient, key: str, job_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=_auth(key)).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        # Each poll costs the gateway ~2.6 ms of CPU, which a busy 2-core machine takes from the
        # worker; 50 ms adds ~25 ms on average to a 1-3 s job.
        time.sleep(0.05)
    raise TimeoutError(job_id)


class Timings:
    def __init__(self) -> None:
        self.rates: dict[str, list[float]] = {}

    def add(self, name: str, n: int, seconds: float) -> None:
        self.rates.setdefault(name, []).append(n / seconds)

    def timed(self, name: str, n: int, fn: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        fn()
        self.add(name, n, time.perf_counter() - t0)

    def median(self, name: str) -> float:
        return statistics.median(self.rates[name]) if name in self.rates else float("nan")

    def row(self, name: str, ref: float) -> str:
        v = self.rates.get(name)
        if not v:
            return f"  {name:<50s} {'-':>8s}"
        med = statistics.median(v)
        return f"  {name:<50s} {med:8.1f}  ({min(v):6.1f}-{max(v):6.1f})  {med / ref:6.2f}x raw ORT"


def _set_affinity(cores: set[int]) -> None:
    """Pin every thread of this process (TestClient's portal and the decode threads exist
    already, and ``sched_setaffinity(0)`` moves only the calling one)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cores)


@contextmanager
def _own_cores(worker_core: int | None) -> Iterator[None]:
    """This process (the client and the gateway) off the worker's core, for the duration."""
    if worker_core is None:
        yield
        return
    every = os.sched_getaffinity(0)
    _set_affinity(every - {worker_core})
    try:
        yield
    finally:
        _set_affinity(every)


@contextmanager
def _celery_worker(
    env: dict[str, str], log_path: str, core: int | None, processes: int = 1
) -> Iterator[None]:
    def pin() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})

    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q",
             "tagging", "-c", str(processes), "-n", f"bench-{uuid.uuid4().hex[:6]}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin,
        )  # fmt: skip
        try:
            yield
        finally:
            worker.terminate()
            worker.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--models-dir", default=os.environ.get("ATELIER_MODELS_DIR", "var/models"))
    p.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    p.add_argument(
        "--redis-slots",
        default="redis://127.0.0.1:6379/8",
        help="broker of the second worker (processes sharing one inference slot)",
    )
    p.add_argument(
        "--worker-processes",
        type=int,
        default=2,
        help="processes of the second worker, which share one inference slot",
    )
    p.add_argument(
        "--db",
        choices=["postgresql", "sqlite"],
        default="sqlite",
        help="the SQL store: SQLite (the embedded mode; on a 2-core machine the cheaper one, as "
        "PostgreSQL's server processes take CPU from the worker) or a scratch PostgreSQL "
        "database on ATELIER_TEST_POSTGRES_URL",
    )
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scales", default="1,3", help="photo upscaling factors, comma-separated")
    p.add_argument(
        "--in-flight",
        type=int,
        default=6,
        help="batches posted back to back in the 'batches in flight' rows (a bulk import; more "
        "batches spread the first upload, which nothing overlaps, over more work)",
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager rows")
    args = p.parse_args(argv)
    models_dir = Path(args.models_dir).resolve()
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    # A disjoint slice of texts per repeat (and for warm-up), so nothing is tagged twice.
    pool = corpus(args.texts * (args.repeats + 1))
    text_sets = [pool[i * args.texts : (i + 1) * args.texts] for i in range(args.repeats + 1)]
    photos = {s: _photos(args.images, s) for s in scales}
    load_before = os.getloadavg()

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        db = stack.enter_context(scratch_url(args.db, tmp))
        common = dict(
            environment="test",
            database_url=db,
            redis_url=args.redis,
            storage_url=f"file://{tmp}/blobs",
            models_dir=models_dir,
        )
        settings = GatewaySettings(**common)
        ctx = WorkerContext(
            settings=WorkerSettings(**common, ort_threads=1, inference_slots_dir=f"{tmp}/slots")
        )
        # The raw rows call onnxruntime's own session, without the worker's inference slot.
        raw_models = ModelRegistry(models_dir, threads=1)
        embedder = raw_models.get(ctx.settings.text_model, TextEmbedder)
        tagger = raw_models.get(ctx.settings.image_model, ImageTagger)

        # --- inputs for the raw and torch rows, prepared once per text set / photo set -------
        doc_batches = [_batches(_document_windows(embedder, ts)) for ts in text_sets]
        fixed_batches = [
            batches(_document_windows(embedder, ts), BATCH, sort=True) for ts in text_sets
        ]
        # The distinct candidates of each set: what the text tagger embeds besides the documents.
        cand_batches = [
            _batches(
                embedder.tokenize(
                    list(dict.fromkeys(c for t in ts for c in keyphrase_candidates(t)))
                )
            )
            for ts in text_sets
        ]
        pixels = {
            s: np.stack([tagger.preprocess(Image.open(io.BytesIO(b))) for b in photos[s]])
            for s in scales
        }

        torch_text: Callable[[list[tuple[np.ndarray, np.ndarray]]], None] | None = None
        torch_image: Callable[[int], None] | None = None
        torch_version = "not installed"
        if not args.no_torch:
            try:
                import torch
            except ImportError:
                torch = None  # type: ignore[assignment]
            if torch is not None:
                from workers.training.build.text_embedder_model import load_torch_model
                from workers.training.efficientnet_lite import load_pretrained

                torch.set_num_threads(1)
                torch_version = torch.__version__
                text_net, image_net = load_torch_model(), load_pretrained()

                def torch_text(batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
                    with torch.inference_mode():
                        for ids, mask in batches:
                            text_net(torch.from_numpy(ids), torch.from_numpy(mask))

                def torch_image(scale: int) -> None:
                    with torch.inference_mode():
                        for i in range(0, len(pixels[scale]), BATCH):
                            image_net(torch.from_numpy(pixels[scale][i : i + BATCH]))

        def raw_text(batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
            for ids, mask in batches:
                embedder._run(ids, mask)

        def raw_image(scale: int) -> None:
            for i in range(0, len(pixels[scale]), BATCH):
                tagger._run(pixels[scale][i : i + BATCH], ["logits", "embedding"])

        def new_tenant() -> tuple[str, str]:
            """A tenant and its API key. Every batch gets a tenant of its own: the photos are
            the same four again and again, and in one tenant each upload would be a near-
            duplicate of every earlier copy, whose lookup reads them all (a tenant of real
            photos holds a few near-duplicates of each, not thousands)."""
            with session_scope(settings.sqlalchemy_url) as s:
                tenant = create_tenant(s, name=f"bench-{uuid.uuid4().hex[:8]}")
                _, key = create_api_key(s, tenant_id=tenant.id, scopes=["read", "write"])
                return tenant.id, key

        def worker_fn(
            texts: list[str] | None = None,
            blobs: list[bytes] | None = None,
            *,
            renditions: bool = True,
        ) -> float:
            """Seconds ``tag_items`` takes on fresh rows (creating them is not timed). Images
            get the working copy, thumbnail and pHash the gateway makes at upload, unless
            ``renditions`` is False (generated images, re-tagging: the original is decoded)."""
            fn_tenant, _ = new_tenant()
            with ctx.session() as s:
                items = []
                for t in texts or []:
                    items.append(ContentItem(tenant_id=fn_tenant, kind=ContentKind.text, text=t))
                for b in blobs or []:
                    blob = ctx.storage.put_bytes(b)
                    image, (w, h) = decode_image(b, min_size=256)
                    item = ContentItem(tenant_id=fn_tenant, kind=ContentKind.image)
                    item.assets.append(
                        Asset(role="original", storage_key=blob.key, sha256=blob.sha256,
                              mime_type="image/jpeg", byte_size=blob.size, width=w, height=h)
                    )  # fmt: skip
                    if renditions:
                        made = make_renditions(
                            image, working_size=settings.working_copy_size,
                            thumbnail_size=settings.thumbnail_size,
                            thumbnail_format=settings.thumbnail_format,
                        )  # fmt: skip
                        item.phash = made.phash
                        for r in made.files:
                            item.assets.append(
                                Asset.stored(ctx.storage.put_bytes(r.data), role=r.role,
                                             mime_type=r.mime_type, width=r.width, height=r.height)
                            )  # fmt: skip
                    items.append(item)
                s.add_all(items)
                s.commit()
                ids = [i.id for i in items]
            with ctx.session() as s:
                rows = s.scalars(select(ContentItem).where(ContentItem.id.in_(ids))).all()
                order = {cid: i for i, cid in enumerate(ids)}
                rows = sorted(rows, key=lambda it: order[it.id])
                t0 = time.perf_counter()
                tag_items(ctx, s, rows)
                return time.perf_counter() - t0

        env = dict(os.environ)
        env.update(
            ATELIER_ENVIRONMENT="test",
            ATELIER_DATABASE_URL=db,
            ATELIER_REDIS_URL=args.redis,
            ATELIER_STORAGE_URL=f"file://{tmp}/blobs",
            ATELIER_MODELS_DIR=str(models_dir),
        )
        t = Timings()
        # Per single-batch e2e run: (POST answered -> job started, job run, finished -> seen).
        phases: dict[str, list[tuple[float, float, float]]] = {}
        # Per in-flight run: (start -> first job started, time with a job running, time with
        # none running between the first start and the last finish, last job finished -> seen
        # by the client), seconds.
        flight_phases: dict[str, list[tuple[float, float, float, float]]] = {}
        # The worker gets a core of its own (the last); the "gateway off the worker's core" rows
        # keep this process (client + gateway) on the others, as when the gateway runs on
        # machines or cores of its own. Other rows let this process use every core.
        cores = sorted(os.sched_getaffinity(0))
        worker_core = cores[-1] if len(cores) > 1 else None
        # A second worker, on a broker of its own with a gateway of its own (both idle while
        # the other runs): several processes, nothing pinned, sharing ONE inference slot, so
        # the model still runs once at a time on one thread (as in the raw rows) while one
        # process's database and file work overlaps another's inference.
        slots_env = {
            **env,
            "ATELIER_REDIS_URL": args.redis_slots,
            "ATELIER_INFERENCE_SLOTS": "1",
            "ATELIER_INFERENCE_SLOTS_DIR": f"{tmp}/slots-1",
        }
        slotted = f"{args.worker_processes} worker processes sharing 1 inference slot"
        with (
            _celery_worker(env, f"{tmp}/worker.log", worker_core),
            _celery_worker(slots_env, f"{tmp}/worker-slots.log", None, args.worker_processes),
            TestClient(create_app(settings)) as client,
            TestClient(
                create_app(settings.model_copy(update={"redis_url": args.redis_slots}))
            ) as slots_client,
        ):

            def e2e(name: str, n: int, **kwargs: Any) -> None:
                _, key = new_tenant()
                t0 = time.perf_counter()
                r = client.post("/v1/content:batch", headers=_auth(key), **kwargs)
                posted = time.time()
                t.add(f"{name}: upload (POST only)", n, time.perf_counter() - t0)
                assert r.status_code == 202, r.text
                job = _wait(client, key, r.json()["job_id"])
                seen = time.time()
                assert job["status"] == "succeeded", job
                t.add(f"{name}: end to end (HTTP -> tags stored)", n, time.perf_counter() - t0)
                started = _timestamp(job["started_at"])
                finished = _timestamp(job["finished_at"])
                phases.setdefault(name, []).append(
                    (started - posted, finished - started, seen - finished)
                )

            def e2e_in_flight(
                name: str,
                n: int,
                payloads: list[dict[str, Any]],
                *,
                own_cores: bool = False,
                via: TestClient | None = None,
            ) -> None:
                """Batches posted back to back, then awaited: upload and tagging overlap (the
                gateway and the worker are separate processes), as in a bulk import. With
                ``own_cores`` this process (client + gateway) stays off the worker's core;
                ``via`` the second gateway, whose worker shares one inference slot."""
                client_ = via or client
                keys = [new_tenant()[1] for _ in payloads]
                t0, wall0 = time.perf_counter(), time.time()
                jobs = []
                with _own_cores(worker_core if own_cores else None):
                    for key, kwargs in zip(keys, payloads, strict=True):
                        r = client_.post("/v1/content:batch", headers=_auth(key), **kwargs)
                        assert r.status_code == 202, r.text
                        jobs.append(r.json()["job_id"])
                    done = [_wait(client_, k, job_id) for k, job_id in zip(keys, jobs, strict=True)]
                elapsed = time.perf_counter() - t0
                assert all(j["status"] == "succeeded" for j in done), done
                label = f"{name}: end to end, {len(payloads)} batches in flight"
                if own_cores:
                    label += ", gateway off the worker's core"
                if via is not None:
                    label += f", {slotted}"
                t.add(label, n * len(payloads), elapsed)
                spans = sorted(
                    (_timestamp(j["started_at"]), _timestamp(j["finished_at"])) for j in done
                )
                # Time with at least one job running (jobs of several processes overlap), and
                # the time between the first start and the last finish with none running.
                busy, reach = 0.0, spans[0][0]
                for start, end in spans:
                    busy += max(0.0, end - max(start, reach))
                    reach = max(reach, end)
                gaps = (spans[-1][1] - spans[0][0]) - busy
                split = (spans[0][0] - wall0, busy, gaps, wall0 + elapsed - spans[-1][1])
                flight_phases.setdefault(label, []).append(split)

            def image_files(scale: int) -> list[Any]:
                return [
                    ("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(photos[scale])
                ]

            # Warm-up on text set 0: model loading, first-run allocations, the worker's imports.
            e2e("warm-up", args.texts, json={"items": [{"text": x} for x in text_sets[0]]})
            worker_fn(texts=text_sets[0])
            for scale in scales:
                e2e("warm-up", args.images, files=image_files(scale))
                # A batch per process of the second worker, so that each has loaded the model.
                warm = [{"files": image_files(scale)}] * (2 * args.worker_processes)
                e2e_in_flight("warm-up", args.images, warm, via=slots_client)
                worker_fn(blobs=photos[scale])
                raw_image(scale)
                if torch_image is not None:
                    torch_image(scale)
            raw_text(doc_batches[0])
            if torch_text is not None:
                torch_text(doc_batches[0])

            for k in range(1, args.repeats + 1):
                n = args.texts
                t.timed("texts: raw ORT (documents)", n, lambda k=k: raw_text(doc_batches[k]))
                t.timed(
                    "texts: raw ORT (documents, fixed batches of 32)",
                    n,
                    lambda k=k: raw_text(fixed_batches[k]),
                )
                t.timed(
                    "texts: raw ORT (documents + distinct candidates)",
                    n,
                    lambda k=k: (raw_text(doc_batches[k]), raw_text(cand_batches[k])),
                )
                if torch_text is not None:
                    tt = torch_text
                    t.timed(
                        "texts: torch eager (documents)",
                        n,
                        lambda k=k, tt=tt: tt(doc_batches[k]),
                    )
                    t.timed(
                        "texts: torch eager (documents + distinct candidates)",
                        n,
                        lambda k=k, tt=tt: (tt(doc_batches[k]), tt(cand_batches[k])),
                    )
                t.add("texts: worker fn (tag_items)", n, worker_fn(texts=text_sets[k]))
                e2e("texts", n, json={"items": [{"text": x} for x in text_sets[k]]})
                in_flight = [{"json": {"items": [{"text": x} for x in ts]}} for ts in text_sets[1:]]
                e2e_in_flight("texts", n, in_flight)
                for scale in scales:
                    m, tag = args.images, f"images x{scale}"
                    t.timed(f"{tag}: raw ORT", m, lambda s=scale: raw_image(s))
                    if torch_image is not None:
                        t.timed(f"{tag}: torch eager", m, lambda s=scale: torch_image(s))
                    t.add(f"{tag}: worker fn (tag_items)", m, worker_fn(blobs=photos[scale]))
                    t.add(
                        f"{tag}: worker fn, original only (no working copy)",
                        m,
                        worker_fn(blobs=photos[scale], renditions=False),
                    )
                    e2e(tag, m, files=image_files(scale))
                    bulk = [{"files": image_files(scale)}] * args.in_flight
                    e2e_in_flight(tag, m, bulk)
                    if worker_core is not None:
                        e2e_in_flight(tag, m, bulk, own_cores=True)
                    e2e_in_flight(tag, m, bulk, via=slots_client)

    # The core's ceiling for matrix products, for the GFLOP/s line, measured in this run.
    gemm = _gemm_peak()
    load_after = os.getloadavg()
    lengths = [len(w) for w in _document_windows(embedder, text_sets[1])]
    n_cands = sum(len(keyphrase_candidates(x)) for x in text_sets[1])
    n_distinct = len({c for x in text_sets[1] for c in keyphrase_candidates(x)})
    print(
        f"{os.cpu_count()} logical cores, {args.db}, load avg {load_before[0]:.1f} before / "
        f"{load_after[0]:.1f} after; torch {torch_version}; 1 ORT thread, batch {BATCH}, "
        f"median of {args.repeats} repeats (min-max), items/s"
    )
    print(
        f"texts: {args.texts} unique per repeat, {len(lengths)} windows, tokens/window median "
        f"{int(np.median(lengths))} max {max(lengths)}, {n_cands} keyphrase candidates "
        f"({n_distinct} distinct); model {embedder.ref}"
    )

    def print_phases(name: str) -> None:
        rows = phases.get(name)
        if rows:
            pick, run, seen = (statistics.median(col) * 1000 for col in zip(*rows, strict=True))
            print(
                f"  single batch, median ms: POST answered -> job started {pick:.0f}, "
                f"job run {run:.0f}, job finished -> seen by the client {seen:.0f}"
            )

    ref = t.median("texts: raw ORT (documents)")
    for name in t.rates:
        if name.startswith("texts"):
            print(t.row(name, ref))
    full = t.median("texts: raw ORT (documents + distinct candidates)")
    e2e_text = t.median("texts: end to end (HTTP -> tags stored)")
    print(f"  end to end / raw ORT incl. candidates: {e2e_text / full:.2f}")
    print_phases("texts")
    eager = t.median("texts: torch eager (documents)")
    eager_full = t.median("texts: torch eager (documents + distinct candidates)")
    fixed = t.median("texts: raw ORT (documents, fixed batches of 32)")
    print(
        f"  raw ORT / torch eager: documents {ref / eager:.2f}, documents + candidates "
        f"{full / eager_full:.2f}; planned runs / fixed batches of 32 (raw ORT): {ref / fixed:.2f}"
    )
    # What one core does: MiniLM-L6 multiply-adds per padded token (6 layers of Q, K, V, output
    # 384x384 and FFN 384x1536x384, plus attention over the window), counted on the batches run.
    flop = sum(_minilm_flops(*ids.shape) for ids, _ in doc_batches[1]) / args.texts
    print(
        f"  GFLOP/s on one core: raw ORT {ref * flop / 1e9:.1f}, torch eager "
        f"{eager * flop / 1e9:.1f} ({flop / 1e9:.2f} GFLOP per text incl. padding)"
    )
    if gemm is not None:
        need = (
            ""
            if np.isnan(eager)
            else f"; 1.5x torch eager would need {1.5 * eager * flop / 1e9:.1f}"
        )
        print(f"  one bare fp32 MatMul (ORT, FFN shape, one thread): {gemm:.1f} GFLOP/s{need}")
    for scale in scales:
        sizes = sorted({Image.open(io.BytesIO(b)).size for b in photos[scale]})
        print(f"images x{scale}: {args.images} JPEG q90, {sizes[0]}..{sizes[-1]}; {tagger.ref}")
        ref = t.median(f"images x{scale}: raw ORT")
        for name in t.rates:
            if name.startswith(f"images x{scale}:"):
                print(t.row(name, ref))
        print(f"  raw ORT / torch eager: {ref / t.median(f'images x{scale}: torch eager'):.2f}")
        print_phases(f"images x{scale}")
        for label, rows in flight_phases.items():
            if label.startswith(f"images x{scale}:"):
                fill, runs, gaps, drain = (
                    statistics.median(c) * 1000 for c in zip(*rows, strict=True)
                )
                print(
                    f"  {label.split(', ', 1)[1]}, median ms: first upload -> first job started "
                    f"{fill:.0f}, jobs running {runs:.0f}, none running {gaps:.0f}, last job "
                    f"finished -> seen {drain:.0f}; raw ORT on the same images "
                    f"{1000 * args.images * args.in_flight / ref:.0f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
