"""The recommender service: ``uvicorn --factory services.recommender.main:create_app``.

It listens on loopback by default and trusts the tenant header the gateway sets only on calls
the gateway signed (see ``api/routes/recommend.py``); put it on a private network all the same.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from services.recommender.api.errors import install_domain_error_handler
from services.recommender.api.routes import health, recommend
from services.recommender.metrics import ModelAgeCollector
from services.recommender.store import ModelStore
from shared.config import RecommenderSettings, recommender_settings
from shared.db.session import get_sessionmaker
from shared.http import RequestMetrics, install_error_handlers
from shared.logging_setup import configure_logging
from shared.request_limits import InputLimits


def create_app(settings: RecommenderSettings | None = None) -> FastAPI:
    settings = settings or recommender_settings()
    configure_logging(settings.log_format, settings.log_level)
    # One BLAS thread per request: requests run concurrently in the thread pool, and nested
    # BLAS threads on a 2-core machine only add contention (docs/perf.md).
    threadpool_limits(1)
    app = FastAPI(title="Atelier recommender", version="1.0")
    app.state.settings = settings
    app.state.sessionmaker = get_sessionmaker(settings.sqlalchemy_url)
    app.state.models = ModelStore(
        settings.models_dir,
        app.state.sessionmaker,
        check_interval_s=settings.model_check_interval_s,
    )
    app.state.metrics_registry = CollectorRegistry()
    app.state.metrics_registry.register(ModelAgeCollector(app.state.models))
    RequestMetrics(app.state.metrics_registry, "recommender").install(app)
    install_error_handlers(app)
    install_domain_error_handler(app)
    app.add_middleware(
        InputLimits, max_bytes=settings.max_json_bytes, max_depth=settings.max_json_depth
    )
    app.include_router(health.router)
    app.include_router(recommend.router)
    return app
