"""Prometheus collectors read at scrape time: jobs by state (SQL) and queue depth (Redis)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from shared.db.models import Job
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
