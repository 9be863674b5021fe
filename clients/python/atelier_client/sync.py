"""The synchronous client: ``Atelier(url, api_key)``, one attribute per area of the API."""

from __future__ import annotations

from typing import Any

import httpx

from atelier_client._http import Call, RetryPolicy, SyncTransport, route
from atelier_client.sync_content import (
    ContentAPI,
    ModelsAPI,
    TaggersAPI,
    TagsAPI,
    VocabularyAPI,
)
from atelier_client.sync_generation import GenerateAPI, GeneratorsAPI
from atelier_client.sync_jobs import JobsAPI, WebhooksAPI
from atelier_client.sync_recommendations import InteractionsAPI, RecommenderAPI


class Atelier:
    """``Atelier(base_url, api_key)``; both default to ``ATELIER_URL`` and ``ATELIER_API_KEY``.

    ``transport`` is handed to httpx (tests pass an in-process one); ``max_retries`` bounds the
    retries of :class:`~atelier_client._http.RetryPolicy`.
    """

    AREAS = (
        JobsAPI,
        ContentAPI,
        TagsAPI,
        VocabularyAPI,
        TaggersAPI,
        ModelsAPI,
        InteractionsAPI,
        RecommenderAPI,
        GenerateAPI,
        GeneratorsAPI,
        WebhooksAPI,
    )

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        policy = retry or RetryPolicy(max_retries=max_retries)
        self._transport = SyncTransport.build(
            base_url, api_key, timeout=timeout, retry=policy, transport=transport
        )
        self.jobs = JobsAPI(self)
        self.content = ContentAPI(self)
        self.tags = TagsAPI(self)
        self.vocabulary = VocabularyAPI(self)
        self.taggers = TaggersAPI(self)
        self.models = ModelsAPI(self)
        self.interactions = InteractionsAPI(self)
        self.recommender = RecommenderAPI(self)
        self.generate = GenerateAPI(self)
        self.generators = GeneratorsAPI(self)
        self.webhooks = WebhooksAPI(self)

    @property
    def base_url(self) -> str:
        return str(self._transport.client.base_url)

    @route("GET", "/healthz")
    def health(self) -> dict[str, Any]:
        return self._transport.send(Call("GET", "/healthz"))

    @route("GET", "/readyz")
    def ready(self) -> dict[str, Any]:
        """The readiness checks; raises :class:`Unavailable` (503) when one fails."""
        return self._transport.send(Call("GET", "/readyz"))

    @route("GET", "/metrics")
    def metrics(self) -> str:
        return self._transport.send(Call("GET", "/metrics", expect="text"))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Atelier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Atelier"]
