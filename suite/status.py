"""`atelier status`: what an operator checks first. Queues and their lengths, the workers that
answer, jobs by state, the bundled models' active versions and their builds under way.

Each part is read on its own: Redis or the workers not answering is reported in place of that
part, never an exception, since a status command is what one runs when something is down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select

from shared.bundled import GENERATORS, describe, pending_build
from shared.config import CommonSettings, WorkerSettings
from shared.db.models import Job
from shared.db.session import session_scope
from shared.model_versions import active_version
from shared.tasks import ALL_QUEUES

# A worker that does not answer a ping within this is reported as not answering.
PING_TIMEOUT_S = 1.0


def _model_names(base: Path) -> list[str]:
    from suite.supervisor import SERVING_MODELS

    # Bundled models only: tenants' own ones are named `<base>__<tenant>` or `tagger_...`, and
    # `recommender/` holds per-tenant directories.
    extra = sorted(
        d.name
        for d in (base.iterdir() if base.is_dir() else [])
        if d.is_dir() and "__" not in d.name and not d.name.startswith((".", "tagger_"))
    )
    names = [*SERVING_MODELS, *GENERATORS]
    return names + [n for n in extra if n not in names and active_version(base, n) is not None]


def _queues(redis_url: str) -> dict[str, Any]:
    try:
        client = redis.Redis.from_url(
            redis_url, socket_connect_timeout=PING_TIMEOUT_S, socket_timeout=PING_TIMEOUT_S
        )
        # Celery's Redis transport keeps each queue's waiting messages in a list of its name.
        return {"lengths": {q: int(client.llen(q)) for q in ALL_QUEUES}}
    except redis.RedisError as exc:
        return {"error": f"Redis at {redis_url} did not answer: {exc}"}


def _workers(redis_url: str) -> dict[str, Any]:
    from shared.queue import create_celery

    try:
        celery = create_celery(WorkerSettings(redis_url=redis_url), publish_timeout_s=1.0)
        replies = celery.control.ping(timeout=PING_TIMEOUT_S) or []
    except Exception as exc:  # the broker's errors vary by transport; any of them means "unknown"
        return {"error": f"could not ask the workers: {type(exc).__name__}: {exc}"}
    names = sorted(name for reply in replies for name in reply)
    return {"answering": names}


def collect(settings: CommonSettings) -> dict[str, Any]:
    """Everything `atelier status` shows, as plain data (its `--json` output)."""
    base = settings.models_dir
    out: dict[str, Any] = {"models_dir": str(base)}
    with session_scope(settings.sqlalchemy_url) as session:
        out["models"] = {name: active_version(base, name) for name in _model_names(base)}
        building = [j for j in (pending_build(session, m) for m in GENERATORS) if j is not None]
        out["builds"] = [
            {"model": (j.params or {}).get("model"), "job_id": j.id, "status": str(j.status),
             "progress": round(j.progress or 0.0, 3), "line": describe(j)}
            for j in building
        ]  # fmt: skip
        rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        out["jobs"] = {str(status): int(count) for status, count in rows}
    out["queues"] = _queues(settings.redis_url)
    out["workers"] = _workers(settings.redis_url)
    return out


def render(status: dict[str, Any]) -> str:
    lines = [f"models in {status['models_dir']}:"]
    lines += [f"  {name:<20} {v or 'not built'}" for name, v in status["models"].items()]
    lines.append("builds under way:" if status["builds"] else "no builds under way")
    lines += [f"  {b['line']}  [job {b['job_id']}]" for b in status["builds"]]
    jobs = status["jobs"]
    lines.append(
        "jobs: " + (", ".join(f"{n} {s}" for s, n in sorted(jobs.items())) if jobs else "none")
    )
    queues = status["queues"]
    if "error" in queues:
        lines.append(f"queues: {queues['error']}")
    else:
        lines.append(
            "queues (messages waiting): "
            + ", ".join(f"{q} {n}" for q, n in queues["lengths"].items())
        )
    workers = status["workers"]
    if "error" in workers:
        lines.append(f"workers: {workers['error']}")
    elif workers["answering"]:
        lines.append(f"workers answering: {', '.join(workers['answering'])}")
    else:
        lines.append(f"workers: none answered within {PING_TIMEOUT_S:g} s")
    return "\n".join(lines)
