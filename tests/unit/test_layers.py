"""The layer and per-extra import contracts in pyproject.toml (``[tool.importlinter]``) hold.

``lint-imports`` reads the static import graph, lazy imports inside functions included, so a
chain that only one code path takes still shows here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> list[str]:
    """The command from the virtualenv running the tests, else the one on PATH."""
    beside = Path(sys.executable).with_name("lint-imports")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("lint-imports")
    assert found, "lint-imports is not installed (the dev extra has it)"
    return [found]


def test_import_contracts_hold() -> None:
    # --no-cache: a cache written by another checkout or a concurrent run must not hide a change.
    proc = subprocess.run(
        [*_lint_imports(), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
