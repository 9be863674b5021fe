"""The recommender service: ``uvicorn --factory services.recommender.main:create_app``."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.recommender.api.routes import health
from shared.config import RecommenderSettings, recommender_settings
from shared.db.session import get_sessionmaker
from shared.http import RequestMetrics, install_error_handlers


def create_app(settings: RecommenderSettings | None = None) -> FastAPI:
    settings = settings or recommender_settings()
    app = FastAPI(title="Atelier recommender", version="1.0")
    app.state.settings = settings
    app.state.sessionmaker = get_sessionmaker(settings.sqlalchemy_url)
    app.state.metrics_registry = CollectorRegistry()
    RequestMetrics(app.state.metrics_registry, "recommender").install(app)
    install_error_handlers(app)
    app.include_router(health.router)
    return app
