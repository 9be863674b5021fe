"""Prometheus collectors of the recommender read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.recommender.store import ModelStore


class ModelAgeCollector(Collector):
    """Age of each tenant's served model: a stalled retraining shows as a growing age."""

    def __init__(self, store: ModelStore):
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "atelier_recommender_model_age_seconds",
            "Seconds since the served recommender model of a tenant was written",
            labels=["tenant"],
        )
        for tenant, seconds in self.store.model_ages().items():
            age.add_metric([tenant], seconds)
        yield age
