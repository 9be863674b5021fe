"""Each role starts from its own extra: the gateway imports nothing from the worker/train extras.

CI installs every extra at once, so a stray import chain (a route importing the model registry,
whose base imports onnxruntime) only shows in the gateway image. The script below blocks the
other extras' packages with a ``sys.meta_path`` finder, in a fresh interpreter, and builds the app.
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

GATEWAY_SCRIPT = """
import sys

BLOCKED = set(sys.argv[2].split(","))
attempted = []


class BlockOtherExtras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempted.append(name)
            raise ImportError(f"{name} is not in the gateway extra")
        return None


sys.meta_path.insert(0, BlockOtherExtras())

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
# An ImportError swallowed by an optional import still means the gateway reached for it.
assert not attempted, f"tried to import {attempted}"
loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
assert not loaded, f"imported {loaded}"
print("gateway ok")
"""


def test_gateway_starts_without_the_worker_and_train_extras(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(GATEWAY_SCRIPT),
            str(tmp_path / "gateway.db"),
            ",".join(NOT_IN_GATEWAY_EXTRA),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gateway ok" in proc.stdout
