from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from anyio import to_thread
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from shared.model_versions import serving_version

router = APIRouter(tags=["health"])

REQUIRED_MODELS = ("image_tagger", "text_embedder")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _checks(request: Request, checks: dict[str, Any]) -> None:
    """Fill ``checks`` one by one, so what answered is known if the deadline passes first."""
    state = request.app.state
    try:
        with state.sessionmaker() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc.__class__.__name__}: {exc}"
    try:
        state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {exc}"
    try:
        state.storage.check()
        checks["storage"] = "ok"
    except Exception as exc:
        checks["storage"] = f"error: {exc}"
    models_dir = state.settings.models_dir
    for name in REQUIRED_MODELS:
        checks[f"model:{name}"] = _model_check(models_dir, name)


def _model_check(models_dir: Path, name: str) -> str:
    """``ok``; ``degraded`` while an older version serves for a corrupt active one (workers
    fall back the same way: shared/inference/registry.py); else why nothing can serve."""
    version, problems = serving_version(models_dir, name)
    if version is None:
        return "error: " + ("; ".join(problems) or f"{name} is missing (run `make models`)")
    if problems:
        return f"degraded: serving {name} {version}; " + "; ".join(problems)
    return f"ok ({version})"


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    timeout = request.app.state.settings.readyz_timeout_s
    found: dict[str, Any] = {}
    # A dependency that hangs (a stalled Redis, a database behind a partition) must not hang
    # the probe: past the deadline the thread is left to finish and the answer is 503.
    with anyio.move_on_after(timeout):
        await to_thread.run_sync(_checks, request, found, abandon_on_cancel=True)
    names = ("database", "redis", "storage", *(f"model:{n}" for n in REQUIRED_MODELS))
    checks = {n: found.get(n, f"error: no answer within {timeout:g} s") for n in names}
    ok = all(str(v).startswith(("ok", "degraded")) for v in checks.values())
    if ok:
        degraded = any(str(v).startswith("degraded") for v in checks.values())
        return JSONResponse({"status": "degraded" if degraded else "ready", "checks": checks})
    return JSONResponse(
        {
            "error": {"code": "not_ready", "message": "a dependency is unavailable"},
            "checks": checks,
        },
        status_code=503,
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    data = await run_in_threadpool(generate_latest, request.app.state.metrics_registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
