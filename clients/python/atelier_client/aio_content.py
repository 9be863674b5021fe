"""The asyncio client's content areas: content, tags, vocabulary, taggers, models."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from atelier_client import calls
from atelier_client._http import Call, route, seg
from atelier_client.aio_jobs import _Area
from atelier_client.files import FileInput, discover
from atelier_client.folders import OnConflict, UploadPlan, plan_uploads
from atelier_client.types import (
    Accepted,
    AsyncJob,
    BatchAccepted,
    Content,
    ContentPage,
    ExamplesAdded,
    ModelVersion,
    SimilarPage,
    Tagger,
    UploadResult,
    Vocabulary,
)


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
