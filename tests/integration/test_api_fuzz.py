"""Schemathesis against the gateway's and the recommender's OpenAPI schemas, on PostgreSQL.

Bounded: a few examples per operation and a per-test time budget. Checks: no server error, and
every response conforms to the schema. Both services run with every dependency up (their own
Redis, the recommender on a loopback port), so a 5xx is a bug, except the 503s that say a
model is not built, which this environment does on purpose (no text generator).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from services.gateway.main import create_app as create_gateway
from services.recommender.main import create_app as create_recommender
from shared.config import RecommenderSettings
from tests.conftest import Stack
from tests.helpers import auth
from tests.integration.test_redis_faults import private_models
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    # No shrinking: a failing example is reported as found, within the time budget.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
# Seconds one service's run may take, whatever the machine: what is left is reported.
BUDGET_S = 100.0
# Designed answers of a service whose optional model is absent, not failures.
MODEL_MISSING_CODES = {"model_not_ready", "model_unavailable"}


@pytest.fixture(scope="module")
def fuzz_stack(
    pg_url: str, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "redis").mkdir()
    server = RedisServer(tmp / "redis")  # jobs published here are never consumed
    try:
        yield Stack(
            name="fuzz",
            db_url=pg_url,
            redis_url=server.url,
            storage_dir=tmp / "blobs",
            models_dir=private_models(models_dir, tmp / "models"),
        )
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_key(fuzz_stack: Stack) -> str:
    return fuzz_stack.new_key(("read", "write", "admin"))[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def recommender_app(fuzz_stack: Stack) -> FastAPI:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": fuzz_stack.db_url,
        "redis_url": fuzz_stack.redis_url,
        "models_dir": fuzz_stack.models_dir,
    }
    return create_recommender(RecommenderSettings(**values))


@pytest.fixture(scope="module")
def recommender_url(recommender_app: FastAPI) -> Iterator[str]:
    """The recommender on a loopback port, as the gateway calls it."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(recommender_app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "recommender did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def gateway_schema(fuzz_stack: Stack, recommender_url: str) -> Any:
    app = create_gateway(fuzz_stack.gateway_settings(recommender_url=recommender_url))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def recommender_schema(recommender_app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", recommender_app)


def _validate(case: schemathesis.Case, headers: dict[str, str]) -> None:
    if case.query and "wait" in case.query:
        # The long-poll of the generation routes: no worker runs here, so a wait only sleeps.
        case.query["wait"] = 0
    response = case.call(headers=headers)
    if response.status_code == 503:
        code = (response.json().get("error") or {}).get("code")
        if code in MODEL_MISSING_CODES:
            return
    case.validate_response(
        response, checks=[not_a_server_error, response_schema_conformance], headers=headers
    )


def _fuzz(schema: Any, headers: dict[str, str]) -> None:
    """Every operation of ``schema`` with FUZZ's examples; all failures reported at once.

    Driven by hypothesis directly: a loop over the operations keeps one pytest test per
    service and one time budget for it."""
    failures: list[str] = []
    deadline = time.monotonic() + BUDGET_S
    for result in schema.get_all_operations():
        operation = result.ok()
        if time.monotonic() > deadline:
            failures.append(f"time budget spent before {operation.label}")
            break

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            _validate(case, dict(headers))

        try:
            run()
        except Exception as exc:  # collected, then reported together
            found = getattr(exc, "exceptions", [exc])
            failures += [f"{operation.label}: {e}"[:2000] for e in found]
    assert not failures, "\n\n".join(failures)


def test_gateway_api_has_no_server_errors(gateway_schema: Any, api_key: str) -> None:
    _fuzz(gateway_schema, auth(api_key))


def test_recommender_api_has_no_server_errors(recommender_schema: Any) -> None:
    _fuzz(recommender_schema, {})
