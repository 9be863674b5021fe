"""The synchronous client's recommendation areas: interactions, recommender."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from atelier_client import calls
from atelier_client._http import Call, route, seg
from atelier_client.files import read_events
from atelier_client.sync_jobs import _Area
from atelier_client.types import (
    ImportSummary,
    InteractionsAccepted,
    Job,
    ModelVersion,
    Recommendations,
    RecommenderConfig,
    UserHistory,
)


class InteractionsAPI(_Area):
    @route("POST", "/v1/interactions")
    def send(self, events: Sequence[Mapping[str, Any]]) -> InteractionsAccepted:
        """Up to 10,000 events, stored all or nothing; events with a known event_id are
        skipped, so sending a batch again never double counts."""
        return self._send(Call("POST", "/v1/interactions", json={"events": list(events)}))

    def import_csv(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = 5000,
        start_row: int = 0,
        default_event_type: str = "view",
        on_batch: Callable[[ImportSummary], None] | None = None,
    ) -> ImportSummary:
        """Send a CSV of events (``user_id,item_id[,event_type,value,timestamp,event_id]``) in
        batches, from data row ``start_row`` on; ``on_batch`` sees the totals after each."""
        summary = ImportSummary(rows_done=start_row)
        batch: list[Mapping[str, Any]] = []
        for i, event in enumerate(read_events(path, default_event_type=default_event_type)):
            if i < start_row:
                continue
            batch.append(event)
            if len(batch) >= batch_size:
                summary.add(len(batch), self.send(batch))
                batch = []
                if on_batch is not None:
                    on_batch(summary)
        if batch:
            summary.add(len(batch), self.send(batch))
            if on_batch is not None:
                on_batch(summary)
        return summary


class RecommenderAPI(_Area):
    @route("GET", "/v1/recommender/config")
    def config(self) -> RecommenderConfig:
        return self._send(Call("GET", "/v1/recommender/config"))

    @route("PUT", "/v1/recommender/config")
    def set_config(
        self,
        *,
        event_weights: Mapping[str, float] | None = None,
        half_life_days: float | None = None,
        trending_half_life_days: float | None = None,
    ) -> RecommenderConfig:
        return self._send(
            calls.recommender_config_put(event_weights, half_life_days, trending_half_life_days)
        )

    @route("POST", "/v1/recommender/train")
    def train(
        self, *, budget_s: float | None = None, candidates: Sequence[str] | None = None
    ) -> Job:
        body = self._send(calls.recommender_train(budget_s, candidates))
        return self._client.jobs.get(body["job_id"])

    @route("GET", "/v1/recommender/models")
    def models(self) -> list[ModelVersion]:
        return self._send(Call("GET", "/v1/recommender/models"))

    @route("POST", "/v1/recommender/models/{version}:activate")
    def activate(self, version: str) -> ModelVersion:
        call = Call("POST", f"/v1/recommender/models/{seg(version)}:activate")
        return self._send(call)

    @route("GET", "/v1/users/{user_id}/interactions")
    def history(self, user_id: str, *, limit: int = 50) -> UserHistory:
        """The user's latest events, newest first, with the items they were on."""
        call = Call("GET", f"/v1/users/{seg(user_id)}/interactions", params={"limit": limit})
        return self._send(call)

    @route("GET", "/v1/users/{user_id}/recommendations")
    def for_user(self, user_id: str, *, limit: int = 10, **filters: Any) -> Recommendations:
        """Filters: ``exclude_seen``, ``tag``, ``kind``, ``metadata`` (``{"field": value}``),
        ``exclude``, ``diversity``, ``seed_items``; lists repeat the parameter."""
        return self._send(calls.recommendations(user_id, {"limit": limit, **filters}))

    @route("GET", "/v1/items/{item_id}/similar")
    def similar_items(
        self, item_id: str, *, limit: int = 10, mode: str = "blend", **filters: Any
    ) -> Recommendations:
        """``mode``: ``cf``, ``content`` or ``blend``."""
        params = {"limit": limit, "mode": mode, **filters}
        return self._send(calls.similar_items(item_id, params))
