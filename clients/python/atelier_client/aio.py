"""The asyncio client: ``AsyncAtelier(url, api_key)``, the same areas and methods as ``Atelier``,
each a coroutine (``iter`` an async iterator)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx

from atelier_client import calls
from atelier_client._http import AsyncTransport, Call, RetryPolicy, route, seg
from atelier_client.errors import JobFailed, WaitTimeout
from atelier_client.files import FileInput, discover, read_events
from atelier_client.folders import OnConflict, UploadPlan, plan_uploads
from atelier_client.types import (
    Accepted,
    AsyncJob,
    BatchAccepted,
    Content,
    ContentPage,
    ExamplesAdded,
    Generation,
    ImportSummary,
    InteractionsAccepted,
    ModelVersion,
    Recommendations,
    RecommenderConfig,
    SimilarPage,
    Tagger,
    UploadResult,
    Vocabulary,
    Webhook,
    WebhookCreated,
    job_fields,
)

POLL_START_S, POLL_MAX_S = 0.25, 5.0


class _Area:
    def __init__(self, client: AsyncAtelier):
        self._client = client
        self._t = client._transport

    async def _send(self, call: Call) -> Any:
        return await self._t.send(call)


class JobsAPI(_Area):
    def _job(self, body: dict[str, Any]) -> AsyncJob:
        return AsyncJob(**job_fields(body), _api=self)

    @route("GET", "/v1/jobs/{job_id}")
    async def get(self, job_id: str) -> AsyncJob:
        return self._job(await self._send(Call("GET", f"/v1/jobs/{seg(job_id)}")))

    @route("POST", "/v1/jobs/{job_id}:cancel")
    async def cancel(self, job_id: str) -> AsyncJob:
        return self._job(await self._send(Call("POST", f"/v1/jobs/{seg(job_id)}:cancel")))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        raise_on_failure: bool = False,
        on_progress: Callable[[AsyncJob], None] | None = None,
    ) -> AsyncJob:
        """Poll until the job is final, every 0.25 s at first, backing off to every 5 s."""
        deadline = time.monotonic() + timeout
        interval = POLL_START_S
        while True:
            job = await self.get(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.done:
                if raise_on_failure and not job.succeeded:
                    raise JobFailed(job)
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(job, timeout)
            await asyncio.sleep(min(interval, left))
            interval = min(interval * 1.5, POLL_MAX_S)


class ContentAPI(_Area):
    @route("POST", "/v1/content")
    async def upload(
        self,
        file: FileInput | None = None,
        *,
        text: str | None = None,
        title: str | None = None,
        external_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        on_conflict: str = "error",
    ) -> Accepted:
        """An image (path, bytes or ``(name, bytes)``) and/or text; tagging runs as a job.
        ``on_conflict="update"`` replaces the item with the same external_id."""
        return await self._send(
            calls.upload(
                file,
                text=text,
                title=title,
                external_id=external_id,
                metadata=metadata,
                on_conflict=on_conflict,
            )
        )

    @route("POST", "/v1/content:batch")
    async def upload_batch(self, items: Sequence[Mapping[str, Any]]) -> BatchAccepted:
        """Up to 100 items in one request and one job: all files, or all text."""
        return await self._send(calls.upload_batch(items))

    async def upload_folder(
        self,
        path: str | os.PathLike[str],
        *,
        concurrency: int = 4,
        recursive: bool = True,
        on_conflict: OnConflict = "skip",
        skip_existing: bool = False,
        external_id_prefix: str = "",
        metadata: Mapping[str, Any] | None = None,
        on_result: Callable[[UploadResult], None] | None = None,
    ) -> list[UploadResult]:
        """Upload the images and text files under ``path``, ``concurrency`` at a time.

        Each file's external_id is ``external_id_prefix`` + its path relative to ``path``, so a
        second run finds the first run's items: ``on_conflict="skip"`` reports them as
        ``exists`` (``"update"`` replaces them); ``skip_existing`` lists the tenant's content
        first and does not send those files at all. Returns one result per file, in path order;
        failures are results, not exceptions.
        """
        files = discover(path, recursive=recursive)
        existing = await self._external_ids() if skip_existing else {}
        plans = plan_uploads(
            files, existing, prefix=external_id_prefix, metadata=metadata, on_conflict=on_conflict
        )
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(plan: UploadPlan) -> UploadResult:
            async with gate:
                res = await self._upload_one(plan)
            if on_result is not None:
                on_result(res)
            return res

        return list(await asyncio.gather(*(one(p) for p in plans)))

    async def _upload_one(self, plan: UploadPlan) -> UploadResult:
        if plan.done is not None:
            return plan.done
        try:
            # Reading the file is blocking I/O: off the event loop.
            call = await asyncio.to_thread(plan.call)
            return plan.result(await self._send(call))
        except Exception as exc:  # one bad file must not stop the others
            return plan.failed(exc)

    async def _external_ids(self) -> dict[str, str]:
        return {
            c["external_id"]: c["id"] async for c in self.iter(page_size=200) if c["external_id"]
        }

    @route("GET", "/v1/content/{content_id}")
    async def get(
        self,
        content_id: str,
        *,
        min_score: float = 0.0,
        limit: int | None = None,
        level: str | None = None,
    ) -> Content:
        return await self._send(calls.content_get(content_id, min_score, limit, level))

    @route("GET", "/v1/content")
    async def list(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        kind: str | None = None,
        tag: str | None = None,
        min_score: float = 0.0,
        level: str | None = None,
    ) -> ContentPage:
        """One page; pass its ``next_cursor`` for the next, or use :meth:`iter`."""
        return await self._send(
            calls.content_list(
                limit=limit, cursor=cursor, kind=kind, tag=tag, min_score=min_score, level=level
            )
        )

    @route("GET", "/v1/content")
    async def iter(
        self,
        *,
        page_size: int = 100,
        kind: str | None = None,
        tag: str | None = None,
        min_score: float = 0.0,
        level: str | None = None,
    ) -> AsyncIterator[Content]:
        """Every item, fetching pages of ``page_size`` as the iteration goes."""
        cursor: str | None = None
        while True:
            page = await self.list(
                limit=page_size, cursor=cursor, kind=kind, tag=tag, min_score=min_score, level=level
            )
            for item in page["items"]:
                yield item
            cursor = page["next_cursor"]
            if not cursor:
                return

    @route("DELETE", "/v1/content/{content_id}")
    async def delete(self, content_id: str) -> None:
        await self._send(calls.content_delete(content_id))

    @route("GET", "/v1/content/{content_id}/assets/{role}")
    async def asset(self, content_id: str, role: str = "original") -> bytes:
        """``original`` or ``thumbnail``."""
        return await self._send(calls.asset(content_id, role))

    @route("GET", "/v1/content/{content_id}/similar")
    async def similar(
        self, content_id: str, *, space: str = "image", limit: int = 10
    ) -> SimilarPage:
        return await self._send(calls.similar_content(content_id, space, limit))


class TagsAPI(_Area):
    @route("POST", "/v1/content/{content_id}/tags")
    async def add(self, content_id: str, tags: Iterable[str | Mapping[str, Any]]) -> Content:
        """Manual tags: names, or ``{"name", "score"}``."""
        return await self._send(calls.tags_add(content_id, tags))

    @route("POST", "/v1/content/{content_id}/tags/{name}:accept")
    async def accept(self, content_id: str, name: str) -> Content:
        return await self._send(calls.tag_action(content_id, name, "accept"))

    @route("POST", "/v1/content/{content_id}/tags/{name}:reject")
    async def reject(self, content_id: str, name: str) -> Content:
        return await self._send(calls.tag_action(content_id, name, "reject"))

    @route("DELETE", "/v1/content/{content_id}/tags/{name}")
    async def delete(self, content_id: str, name: str) -> None:
        await self._send(calls.tag_delete(content_id, name))


class VocabularyAPI(_Area):
    @route("GET", "/v1/vocabulary")
    async def get(self) -> Vocabulary:
        return await self._send(Call("GET", "/v1/vocabulary"))

    @route("PUT", "/v1/vocabulary")
    async def put(
        self,
        entries: Sequence[Mapping[str, Any]],
        facets: Sequence[Mapping[str, Any]] | None = None,
    ) -> Vocabulary:
        """Replace the vocabulary: entries ``{"name", "descriptions", "facet"?, "threshold"?}``."""
        return await self._send(calls.vocabulary_put(entries, facets))


class TaggersAPI(_Area):
    @route("POST", "/v1/taggers")
    async def create(
        self, name: str, *, kind: str, labels: Sequence[str], mode: str | None = None
    ) -> Tagger:
        return await self._send(calls.tagger_create(name, kind, labels, mode))

    @route("GET", "/v1/taggers")
    async def list(self) -> list[Tagger]:
        return await self._send(Call("GET", "/v1/taggers"))["items"]

    @route("GET", "/v1/taggers/{tagger_id}")
    async def get(self, tagger_id: str) -> Tagger:
        return await self._send(Call("GET", f"/v1/taggers/{seg(tagger_id)}"))

    @route("POST", "/v1/taggers/{tagger_id}/examples")
    async def add_examples(
        self, tagger_id: str, examples: Iterable[Mapping[str, str] | tuple[str, str]]
    ) -> ExamplesAdded:
        """``(content_id, label)`` pairs or ``{"content_id", "label"}``."""
        return await self._send(calls.tagger_examples(tagger_id, examples))

    @route("POST", "/v1/taggers/{tagger_id}/train")
    async def train(self, tagger_id: str) -> AsyncJob:
        body = await self._send(Call("POST", f"/v1/taggers/{seg(tagger_id)}/train"))
        return await self._client.jobs.get(body["job_id"])


class ModelsAPI(_Area):
    @route("GET", "/v1/models")
    async def list(self, *, kind: str | None = None) -> list[ModelVersion]:
        return await self._send(Call("GET", "/v1/models", params={"kind": kind}))["items"]

    @route("POST", "/v1/models/{name}/versions/{version}:activate")
    async def activate(self, name: str, version: str) -> ModelVersion:
        return await self._send(calls.model_activate(name, version))


class InteractionsAPI(_Area):
    @route("POST", "/v1/interactions")
    async def send(self, events: Sequence[Mapping[str, Any]]) -> InteractionsAccepted:
        """Up to 10,000 events, stored all or nothing; events with a known event_id are
        skipped, so sending a batch again never double counts."""
        return await self._send(Call("POST", "/v1/interactions", json={"events": list(events)}))

    async def import_csv(
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
                summary.add(len(batch), await self.send(batch))
                batch = []
                if on_batch is not None:
                    on_batch(summary)
        if batch:
            summary.add(len(batch), await self.send(batch))
            if on_batch is not None:
                on_batch(summary)
        return summary


class RecommenderAPI(_Area):
    @route("GET", "/v1/recommender/config")
    async def config(self) -> RecommenderConfig:
        return await self._send(Call("GET", "/v1/recommender/config"))

    @route("PUT", "/v1/recommender/config")
    async def set_config(
        self,
        *,
        event_weights: Mapping[str, float] | None = None,
        half_life_days: float | None = None,
        trending_half_life_days: float | None = None,
    ) -> RecommenderConfig:
        return await self._send(
            calls.recommender_config_put(event_weights, half_life_days, trending_half_life_days)
        )

    @route("POST", "/v1/recommender/train")
    async def train(
        self, *, budget_s: float | None = None, candidates: Sequence[str] | None = None
    ) -> AsyncJob:
        body = await self._send(calls.recommender_train(budget_s, candidates))
        return await self._client.jobs.get(body["job_id"])

    @route("GET", "/v1/recommender/models")
    async def models(self) -> list[ModelVersion]:
        return await self._send(Call("GET", "/v1/recommender/models"))

    @route("POST", "/v1/recommender/models/{version}:activate")
    async def activate(self, version: str) -> ModelVersion:
        call = Call("POST", f"/v1/recommender/models/{seg(version)}:activate")
        return await self._send(call)

    @route("GET", "/v1/users/{user_id}/recommendations")
    async def for_user(self, user_id: str, *, limit: int = 10, **filters: Any) -> Recommendations:
        """Filters: ``exclude_seen``, ``tag``, ``kind``, ``metadata`` (``{"field": value}``),
        ``exclude``, ``diversity``, ``seed_items``; lists repeat the parameter."""
        return await self._send(calls.recommendations(user_id, {"limit": limit, **filters}))

    @route("GET", "/v1/items/{item_id}/similar")
    async def similar_items(
        self, item_id: str, *, limit: int = 10, mode: str = "blend", **filters: Any
    ) -> Recommendations:
        """``mode``: ``cf``, ``content`` or ``blend``."""
        params = {"limit": limit, "mode": mode, **filters}
        return await self._send(calls.similar_items(item_id, params))


class GenerateAPI(_Area):
    @route("POST", "/v1/generate/text")
    async def text(
        self, prompt: str = "", *, wait: float | None = None, **options: Any
    ) -> Generation:
        """Options: max_length, temperature, top_k, top_p, seed, n, stop, model_version, tag.
        ``status`` is ``succeeded`` with ``result`` when ready within ``wait`` seconds; else
        wait on ``job_id``."""
        return await self._send(
            calls.generate("/v1/generate/text", {"prompt": prompt, **options}, wait)
        )

    @route("POST", "/v1/generate/images")
    async def images(self, *, n: int = 8, wait: float | None = None, **options: Any) -> Generation:
        """Options: seed, truncation, model_version, tag; images are stored as content."""
        return await self._send(calls.generate("/v1/generate/images", {"n": n, **options}, wait))

    @route("POST", "/v1/generate/images:interpolate")
    async def interpolate(
        self, seed_a: int, seed_b: int, *, wait: float | None = None, **options: Any
    ) -> Generation:
        body = {"seed_a": seed_a, "seed_b": seed_b, **options}
        return await self._send(calls.generate("/v1/generate/images:interpolate", body, wait))


class GeneratorsAPI(_Area):
    @route("POST", "/v1/generators/text:train")
    async def train_text(self, **options: Any) -> AsyncJob:
        """Options: filter ``{"tag", "kind"}``, corpus, epochs, budget_s, hidden, layers, ..."""
        body = await self._send(Call("POST", "/v1/generators/text:train", json=options))
        return await self._client.jobs.get(body["job_id"])

    @route("POST", "/v1/generators/images:train")
    async def train_images(self, **options: Any) -> AsyncJob:
        """Options: filter ``{"tag"}``, steps, budget_s, conditional."""
        body = await self._send(Call("POST", "/v1/generators/images:train", json=options))
        return await self._client.jobs.get(body["job_id"])


class WebhooksAPI(_Area):
    @route("POST", "/v1/webhooks")
    async def create(self, url: str, *, job_types: Sequence[str] = ()) -> WebhookCreated:
        """Needs an admin key; the answer's ``secret`` is shown this once."""
        body = {"url": url, "job_types": list(job_types)}
        return await self._send(Call("POST", "/v1/webhooks", json=body))

    @route("GET", "/v1/webhooks")
    async def list(self) -> list[Webhook]:
        return await self._send(Call("GET", "/v1/webhooks"))

    @route("DELETE", "/v1/webhooks/{webhook_id}")
    async def delete(self, webhook_id: str) -> None:
        await self._send(Call("DELETE", f"/v1/webhooks/{seg(webhook_id)}", expect="none"))


class AsyncAtelier:
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
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        policy = retry or RetryPolicy(max_retries=max_retries)
        self._transport = AsyncTransport.build(
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
    async def health(self) -> dict[str, Any]:
        return await self._transport.send(Call("GET", "/healthz"))

    @route("GET", "/readyz")
    async def ready(self) -> dict[str, Any]:
        """The readiness checks; raises :class:`Unavailable` (503) when one fails."""
        return await self._transport.send(Call("GET", "/readyz"))

    @route("GET", "/metrics")
    async def metrics(self) -> str:
        return await self._transport.send(Call("GET", "/metrics", expect="text"))

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncAtelier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["AsyncAtelier"]
