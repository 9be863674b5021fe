"""The public HTTP API: ``uvicorn services.gateway.main:app`` (or ``create_app(settings)``)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import redis
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.gateway.api.deps import KeyCache
from services.gateway.api.metrics import JobsCollector, ModelVersionsCollector
from services.gateway.api.routes import (
    content,
    generation,
    health,
    jobs,
    models,
    recommendations,
    similar,
    tag_review,
    taggers,
    vocabulary,
    webhooks,
)
from services.gateway.api.routes.health import REQUIRED_MODELS
from services.gateway.console import install_console
from services.gateway.rate_limit import RateLimiter
from services.gateway.recommender_client import RecommenderClient
from services.gateway.similar import SimilarIndex
from shared.bundled import GENERATORS
from shared.config import GatewaySettings, WorkerSettings, gateway_settings
from shared.db.session import get_sessionmaker
from shared.http import BodySizeLimit, RequestMetrics, install_error_handlers
from shared.logging_setup import configure_logging
from shared.queue import create_celery
from shared.request_limits import InputLimits
from shared.storage import open_storage

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or gateway_settings()
    configure_logging(settings.log_format, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.recommender.close()
        await app.state.rate_limiter.close()
        app.state.redis.close()

    app = FastAPI(
        title="Atelier gateway",
        version="1.0",
        description="Tag, generate and recommend content for your CMS.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sessionmaker = get_sessionmaker(settings.sqlalchemy_url)
    app.state.storage = open_storage(settings.storage_url, settings)
    app.state.recommender = RecommenderClient(
        settings.recommender_url,
        timeout_s=settings.recommender_timeout_s,
        secret=settings.internal_secret.get_secret_value(),
    )
    app.state.key_cache = KeyCache(settings.api_key_cache_s)
    app.state.rate_limiter = RateLimiter(
        settings.redis_url,
        key_rps=settings.rate_limit_key_rps,
        key_burst=settings.rate_limit_key_burst,
        tenant_rps=settings.rate_limit_tenant_rps,
        tenant_burst=settings.rate_limit_tenant_burst,
    )
    app.state.similar = SimilarIndex(settings.similar_cache_mb * 2**20)
    # One process-wide bound on concurrent upload decodes, whatever the number of requests: a
    # batch's files decode in parallel, never more than decode_threads at once (CPU, and
    # memory: a decoded image can be large).
    app.state.decode_limiter = anyio.CapacityLimiter(settings.decode_threads or os.cpu_count() or 1)
    app.state.celery = create_celery(
        WorkerSettings(redis_url=settings.redis_url), publish_timeout_s=settings.broker_timeout_s
    )
    # No retries: a readiness check answers how Redis is now, within broker_timeout_s.
    app.state.redis = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.broker_timeout_s,
        socket_timeout=settings.broker_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    app.state.metrics_registry = CollectorRegistry()
    app.state.metrics_registry.register(JobsCollector(app))
    app.state.metrics_registry.register(
        ModelVersionsCollector(settings.models_dir, (*REQUIRED_MODELS, *GENERATORS))
    )
    RequestMetrics(app.state.metrics_registry, "gateway").install(app)
    install_error_handlers(app)
    # Multipart envelope + text fields ride on top of the file's own limit.
    app.add_middleware(
        BodySizeLimit,
        limit=settings.max_upload_bytes + settings.max_text_chars * 4 + 1024 * 1024,
    )
    app.add_middleware(
        InputLimits, max_bytes=settings.max_json_bytes, max_depth=settings.max_json_depth
    )
    app.include_router(health.router)
    app.include_router(content.router)
    app.include_router(jobs.router)
    app.include_router(recommendations.router)
    app.include_router(vocabulary.router)
    app.include_router(tag_review.router)
    app.include_router(similar.router)
    app.include_router(taggers.router)
    app.include_router(models.router)
    app.include_router(generation.router)
    app.include_router(webhooks.router)
    install_console(app)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn services.gateway.main:app` builds the app on first access, not at import time,
    # so tests can import this module without reading the environment.
    if name == "app":
        return create_app()
    raise AttributeError(name)
