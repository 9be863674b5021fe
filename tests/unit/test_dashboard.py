"""Every metric the Grafana dashboard queries is one the code registers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}


def _names(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES.get(family.type, ()))
    return names


def _registered(tmp_path: Path) -> set[str]:
    import shared.metrics  # noqa: F401  (registers the workers' metrics)
    from services.gateway.main import create_app as gateway_app
    from services.recommender.main import create_app as recommender_app
    from shared.config import GatewaySettings, RecommenderSettings

    db = f"sqlite:///{tmp_path / 'x.db'}"
    # Nothing listens there: the scrape-time collectors still name their families.
    gateway = gateway_app(
        GatewaySettings(database_url=db, redis_url="redis://127.0.0.1:1/0", broker_timeout_s=0.2)
    )
    recommender = recommender_app(RecommenderSettings(database_url=db))
    return (
        _names(REGISTRY)
        | _names(gateway.state.metrics_registry)
        | _names(recommender.state.metrics_registry)
    )


def test_dashboard_queries_only_registered_metrics(tmp_path: Path) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "atelier.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {name for expr in exprs for name in re.findall(r"\batelier_[a-z0-9_]+", expr)}
    assert queried, "the dashboard queries no atelier metric"
    missing = queried - _registered(tmp_path)
    assert not missing, f"the dashboard queries metrics no code registers: {sorted(missing)}"
