"""Prometheus collectors read at scrape time: jobs by state (SQL), queue depth (Redis) and the
active model versions (models_dir)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from shared.db.models import Job
from shared.model_versions import active_version
from shared.tasks import QUEUES

log = logging.getLogger(__name__)


class JobsCollector(Collector):
    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("atelier_jobs", "Jobs by type and state", labels=["type", "state"])
        try:
            with self.app.state.sessionmaker() as s:
                rows = s.execute(
                    select(Job.type, Job.status, func.count()).group_by(Job.type, Job.status)
                ).all()
            for jtype, status, n in rows:
                jobs.add_metric([jtype, status], n)
        except Exception as exc:
            log.warning("metrics: cannot count jobs: %s", exc)
        yield jobs
        depth = GaugeMetricFamily("atelier_queue_depth", "Messages waiting", labels=["queue"])
        try:
            for q in QUEUES:
                depth.add_metric([q], self.app.state.redis.llen(q))
        except Exception as exc:
            log.warning("metrics: cannot read queue depth: %s", exc)
        yield depth


class ModelVersionsCollector(Collector):
    """The active version of each serving model in models_dir, read at scrape time: after an
    activation or rollback the next scrape shows it, with no state kept here."""

    def __init__(self, models_dir: Path, names: tuple[str, ...]):
        self.models_dir = models_dir
        self.names = names

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "atelier_model_version_info",
            "Active version of each serving model (always 1)",
            labels=["model", "version"],
        )
        for name in self.names:
            version = active_version(self.models_dir, name)
            if version:
                info.add_metric([name, version], 1)
        yield info
