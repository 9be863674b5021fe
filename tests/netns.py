"""Several "hosts" on one machine: network namespaces joined by veth pairs on a bridge.

The root namespace is the services host (PostgreSQL, Redis, S3); every other host is a network
namespace with one veth pair whose root end is enslaved to a bridge, so hosts reach the services
host and each other only through their own address on a subnet of their own, never loopback.
Namespaces isolate the network only: each host gets its own directories for models and
inference slots, as a machine of its own would, and nothing of the blob store is on disk.

Used by tests/integration/test_multi_host.py and bench/bench_multi_host.py; needs root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    if shutil.which("socat") is None:
        return "socat is not installed (it forwards PostgreSQL to the services host's address)"
    probe = f"atl-probe-{uuid.uuid4().hex[:6]}"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 under 10.213/16 that no interface of this machine uses: test runs and a bench may
    overlap, and two bridges with one subnet would route each other's packets astray."""
    used = _ip("-4", "-o", "addr").stdout
    for _ in range(100):
        net = ipaddress.IPv4Network(f"10.213.{random.randrange(1, 255)}.0/24")
        if f" {net.network_address + 1}/" not in used:
            return net
    raise RuntimeError("no free 10.213.x.0/24 subnet")


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone already
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class Host:
    """A network namespace with one address on the bridge; its processes run by `ip netns exec`."""

    def __init__(self, network: Network, label: str, index: int) -> None:
        self.label = label
        self.ns = f"{network.tag}-{label}"
        self.ip = str(network.subnet.network_address + 10 + index)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        # Interface names are at most 15 characters.
        outer, inner = f"{network.tag}h{index}", f"{network.tag}n{index}"
        _ip("netns", "add", self.ns)
        network.namespaces.append(self.ns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", self.ns)
        _ip("link", "set", outer, "master", network.bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", self.ns, "addr", "add", f"{self.ip}/{network.subnet.prefixlen}", "dev", inner)
        _ip("-n", self.ns, "link", "set", inner, "up")
        _ip("-n", self.ns, "link", "set", "lo", "up")

    def popen(
        self, argv: Sequence[str], env: dict[str, str], log_path: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace; `ip netns exec` execs it, so the pid is argv's."""
        log = log_path.open("ab")
        self._logs.append(log)
        # A new session: killing the host kills the process group, children included.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every live process whose network namespace is this host's, whoever started it.

        Zombies are left out: they run nothing, and orphans wait on whatever reaps them here."""
        out = _ip("netns", "pids", self.ns, check=False).stdout
        return [int(p) for p in out.split() if not _zombie(int(p))]

    def signal_all(self, sig: signal.Signals) -> None:
        """Signal every process of the host (SIGSTOP freezes it: it commits nothing more)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """The host dies: SIGKILL everything in it, without a chance to ack or clean up.

        Returns once the namespace holds no live process (SIGKILL is not instant)."""
        deadline = time.monotonic() + 20
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for proc in self.procs:
                proc.poll()  # reaps the ones this process started
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM what this host runs (a warm shutdown), then kill whatever is left."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        self.kill()
        for log in self._logs:
            log.close()
        self._logs.clear()


class Network:
    """A bridge in the root namespace (the services host, at ``.1``) and hosts attached to it."""

    def __init__(self) -> None:
        self.tag = f"a{uuid.uuid4().hex[:5]}"
        self.subnet = _free_subnet()
        self.services_ip = str(self.subnet.network_address + 1)
        self.bridge = f"{self.tag}br"
        self.hosts: list[Host] = []
        self.namespaces: list[str] = []
        self.services: list[subprocess.Popen[bytes]] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.services_ip}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, label: str) -> Host:
        host = Host(self, label, len(self.hosts))
        self.hosts.append(host)
        return host

    def spawn_service(
        self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A process of the services host (root namespace), stopped by ``close``."""
        with log_path.open("ab") as log:
            proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.services.append(proc)
        return proc

    def forward_tcp(self, port: int, target: str, log_path: Path) -> int:
        """Serve ``target`` (host:port on loopback) on the bridge address; returns the port.

        PostgreSQL listens on 127.0.0.1 only, which other namespaces cannot reach; a forwarder
        puts it on the services host's address without touching the cluster's configuration."""
        if shutil.which("socat") is None:
            raise RuntimeError("socat is not installed")
        self.spawn_service(
            ["socat", f"TCP-LISTEN:{port},bind={self.services_ip},reuseaddr,fork",
             f"TCP:{target}"],
            log_path,
        )  # fmt: skip
        wait_tcp(self.services_ip, port)
        return port

    def close(self) -> None:
        """Stop every host's processes and the services' ones, then remove namespaces and bridge.

        Each step runs whatever the one before it raised, so a failed test leaves nothing."""
        for host in self.hosts:
            try:
                host.stop(timeout=10)
            except Exception as e:  # teardown goes on: the other hosts must go too
                print(f"netns: stopping {host.ns}: {e}", file=sys.stderr)
        for proc in self.services:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)  # its veth ends go with it
        _ip("link", "del", self.bridge, check=False)


def wait_tcp(host: str, port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def free_port(ip: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def copy_models(source: Path, dest: Path, names: Sequence[str]) -> Path:
    """A host's own local models directory: real copies, since hosts share no disk."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree((source / name).resolve(), dest / name, symlinks=False)
    return dest


# The Atelier deployment across hosts, shared by the multi-host test and bench.

SERVING_MODELS = ("image_tagger", "text_embedder")


class Cluster:
    """Services in the root namespace, a gateway host and worker hosts, one bucket for blobs.

    ``workers`` gives each worker host's process count (0: the host runs none). Use as a
    context manager: leaving it stops every process and removes every namespace, always."""

    def __init__(
        self,
        tmp: Path,
        models_dir: Path,
        pg_server: str,
        workers: Sequence[int] = (1, 1),
        env: dict[str, str] | None = None,
        beat: bool = True,
    ) -> None:
        self.tmp = tmp
        self.models_dir = models_dir
        self.pg_server = pg_server
        self.worker_counts = tuple(workers)
        self.extra_env = env or {}
        self.beat = beat
        self.network: Network | None = None
        self.worker_hosts: list[Host] = []
        self._closers: list[object] = []

    def __enter__(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _start(self) -> None:
        from moto.server import ThreadedMotoServer
        from sqlalchemy.engine import make_url

        from shared.db.migrate import upgrade
        from shared.db.scratch import scratch_database

        net = self.network = Network()
        logs = self.tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        ip = net.services_ip

        # Redis of its own on the services address: the shared one listens on loopback only.
        # Without a password Redis refuses every client not on loopback ("protected mode"); this
        # one is bound to the private bridge alone, so other hosts may connect.
        redis_port = free_port(ip)
        net.spawn_service(
            ["redis-server", "--port", str(redis_port), "--bind", ip, "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--dir", str(self.tmp)],
            logs / "redis.log",
        )  # fmt: skip
        wait_tcp(ip, redis_port)
        self.redis_url = f"redis://{ip}:{redis_port}/0"

        # A throw-away database on the shared PostgreSQL, reached through a forwarder.
        db = scratch_database(self.pg_server, prefix="atelier_multihost")
        self.local_db_url = db.__enter__()
        self._closers.append(db)
        upgrade(self.local_db_url)
        pg = make_url(self.pg_server)
        fwd = net.forward_tcp(free_port(ip), f"{pg.host}:{pg.port or 5432}", logs / "pg-fwd.log")
        self.db_url = make_url(self.local_db_url).set(host=ip, port=fwd).render_as_string(False)

        # Moto logs every request through werkzeug: thousands of lines in a failure's report.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.moto = ThreadedMotoServer(ip_address=ip, port=0, verbose=False)
        self.moto.start()
        self._closers.append(self.moto)
        s3_host, s3_port = self.moto.get_host_and_port()
        self.s3_endpoint = f"http://{s3_host}:{s3_port}"
        self.bucket = f"atelier-{uuid.uuid4().hex[:12]}"
        self.s3_client().create_bucket(Bucket=self.bucket)

        self.gateway = net.add_host("gw")
        self.gateway_port = 8000
        self.gateway_url = f"http://{self.gateway.ip}:{self.gateway_port}"
        self.gateway.popen(
            [sys.executable, "-m", "uvicorn", "--host", self.gateway.ip, "--port",
             str(self.gateway_port), "--no-access-log", "--factory",
             "services.gateway.main:create_app"],
            self.env(self.gateway),
            logs / "gateway.log",
        )  # fmt: skip
        for i, count in enumerate(self.worker_counts):
            host = net.add_host(f"w{i}")
            self.worker_hosts.append(host)
            if count:
                self._start_worker(host, count)
        if self.beat:
            # Beat only schedules; the sweep itself runs on whichever worker takes it.
            net.spawn_service(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat",
                 "--loglevel", "INFO", "-s", str(self.tmp / "celerybeat-schedule")],
                logs / "beat.log",
                env=self.env(None),
            )  # fmt: skip
        self._wait_ready()

    def env(self, host: Host | None) -> dict[str, str]:
        """A host's environment: the services host's addresses, and local dirs of its own."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        for k in ("REDIS_URL", "DATABASE_URL"):
            env.pop(k, None)
        local = self.tmp / (host.label if host else "services")
        if host is not None and not (local / "models").exists():
            copy_models(self.models_dir, local / "models", SERVING_MODELS)
        (local / "slots").mkdir(parents=True, exist_ok=True)
        env.update(
            ATELIER_ENVIRONMENT="test",
            ATELIER_DATABASE_URL=self.db_url,
            ATELIER_REDIS_URL=self.redis_url,
            ATELIER_STORAGE_URL=f"s3://{self.bucket}/blobs",
            ATELIER_S3_ENDPOINT_URL=self.s3_endpoint,
            ATELIER_S3_REGION="us-east-1",
            ATELIER_S3_ACCESS_KEY_ID="testing",
            ATELIER_S3_SECRET_ACCESS_KEY="testing",
            ATELIER_S3_ADDRESSING_STYLE="path",
            ATELIER_MODELS_DIR=str(local / "models"),
            ATELIER_INFERENCE_SLOTS_DIR=str(local / "slots"),
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start_worker(self, host: Host, processes: int, timeout: float = 120) -> None:
        """Start a tagging worker of ``processes`` processes on ``host``, and wait until ready."""
        self._start_worker(host, processes)
        deadline = time.monotonic() + timeout
        while b" ready." not in self.worker_log(host).read_bytes():
            if time.monotonic() > deadline or any(p.poll() is not None for p in host.procs):
                raise RuntimeError(f"worker on {host.ns} did not start:\n{self.logs_tail()}")
            time.sleep(0.2)

    def _start_worker(self, host: Host, processes: int) -> None:
        host.popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q",
             "tagging", "-n", f"{host.label}@{host.ns}", "-c", str(processes),
             "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
            self.env(host),
            self.worker_log(host),
        )  # fmt: skip

    def worker_log(self, host: Host) -> Path:
        return self.tmp / "logs" / f"worker-{host.label}.log"

    def _wait_ready(self, timeout: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        pending = [h for h, n in zip(self.worker_hosts, self.worker_counts, strict=True) if n]
        gateway_up = False
        while time.monotonic() < deadline:
            pending = [h for h in pending if b" ready." not in self.worker_log(h).read_bytes()]
            if not gateway_up:
                try:
                    r = httpx.get(f"{self.gateway_url}/readyz", timeout=2, trust_env=False)
                    gateway_up = r.status_code == 200
                except httpx.HTTPError:
                    pass
            if gateway_up and not pending:
                return
            for host in [self.gateway, *self.worker_hosts]:
                if any(p.poll() is not None for p in host.procs):
                    raise RuntimeError(f"{host.ns} exited:\n{self.logs_tail()}")
            time.sleep(0.3)
        raise RuntimeError(f"cluster not ready in {timeout}s:\n{self.logs_tail()}")

    def logs_tail(self, chars: int = 2000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
            for p in sorted((self.tmp / "logs").glob("*.log"))
        )

    def s3_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def close(self) -> None:
        try:
            if self.network is not None:
                self.network.close()
        finally:
            for closer in reversed(self._closers):
                try:
                    if hasattr(closer, "stop"):
                        closer.stop()
                    else:
                        closer.__exit__(None, None, None)  # type: ignore[attr-defined]
                except Exception as e:  # the rest must still go
                    print(f"netns: closing {closer!r}: {e}", file=sys.stderr)
            self._closers.clear()
