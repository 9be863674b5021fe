"""Apps on loopback ports for integration tests: uvicorn in a thread, real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from services.recommender.main import create_app as create_recommender
from shared.config import RecommenderSettings
from tests.conftest import Stack


@contextmanager
def serve(app: Any, *, lifespan: str) -> Iterator[str]:
    """``app`` on a free loopback port, in a thread; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (server.started and server.servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def recommender_server(stack: Stack) -> Iterator[str]:
    """The recommender service on ``stack``'s database and models; yields its URL."""
    reco = create_recommender(
        RecommenderSettings(
            environment="test",
            database_url=stack.db_url,
            models_dir=stack.models_dir,
            model_check_interval_s=0.0,
        )
    )
    with serve(reco, lifespan="off") as url:
        yield url
