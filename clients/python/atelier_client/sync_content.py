"""The synchronous client's content areas: content, tags, vocabulary, taggers, models."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from atelier_client import calls
from atelier_client._http import Call, route, seg
from atelier_client.files import FileInput, discover
from atelier_client.folders import OnConflict, UploadPlan, plan_uploads
from atelier_client.sync_jobs import _Area
from atelier_client.types import (
    Accepted,
    BatchAccepted,
    Content,
    ContentPage,
    ExamplesAdded,
    Job,
    ModelVersion,
    SimilarPage,
    Tagger,
    UploadResult,
    Vocabulary,
)


class ContentAPI(_Area):
    @route("POST", "/v1/content")
    def upload(
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
        return self._send(
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
    def upload_batch(self, items: Sequence[Mapping[str, Any]]) -> BatchAccepted:
        """Up to 100 items in one request and one job: all files, or all text."""
        return self._send(calls.upload_batch(items))

    def upload_folder(
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
        existing = self._external_ids() if skip_existing else {}
        plans = plan_uploads(
            files, existing, prefix=external_id_prefix, metadata=metadata, on_conflict=on_conflict
        )
        results: list[UploadResult | None] = [None] * len(plans)
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = {pool.submit(self._upload_one, p): i for i, p in enumerate(plans)}
            for fut in as_completed(futures):
                res = fut.result()
                results[futures[fut]] = res
                if on_result is not None:
                    on_result(res)
        return [r for r in results if r is not None]

    def _upload_one(self, plan: UploadPlan) -> UploadResult:
        if plan.done is not None:
            return plan.done
        try:
            return plan.result(self._send(plan.call()))
        except Exception as exc:  # one bad file must not stop the others
            return plan.failed(exc)

    def _external_ids(self) -> dict[str, str]:
        return {c["external_id"]: c["id"] for c in self.iter(page_size=200) if c["external_id"]}

    @route("GET", "/v1/content/{content_id}")
    def get(
        self,
        content_id: str,
        *,
        min_score: float = 0.0,
        limit: int | None = None,
        level: str | None = None,
    ) -> Content:
        return self._send(calls.content_get(content_id, min_score, limit, level))

    @route("GET", "/v1/content")
    def list(
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
        return self._send(
            calls.content_list(
                limit=limit, cursor=cursor, kind=kind, tag=tag, min_score=min_score, level=level
            )
        )

    @route("GET", "/v1/content")
    def iter(
        self,
        *,
        page_size: int = 100,
        kind: str | None = None,
        tag: str | None = None,
        min_score: float = 0.0,
        level: str | None = None,
    ) -> Iterator[Content]:
        """Every item, fetching pages of ``page_size`` as the iteration goes."""
        cursor: str | None = None
        while True:
            page = self.list(
                limit=page_size, cursor=cursor, kind=kind, tag=tag, min_score=min_score, level=level
            )
            yield from page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    @route("DELETE", "/v1/content/{content_id}")
    def delete(self, content_id: str) -> None:
        self._send(calls.content_delete(content_id))

    @route("GET", "/v1/content/{content_id}/assets/{role}")
    def asset(self, content_id: str, role: str = "original") -> bytes:
        """``original`` or ``thumbnail``."""
        return self._send(calls.asset(content_id, role))

    @route("GET", "/v1/content/{content_id}/similar")
    def similar(self, content_id: str, *, space: str = "image", limit: int = 10) -> SimilarPage:
        return self._send(calls.similar_content(content_id, space, limit))


class TagsAPI(_Area):
    @route("POST", "/v1/content/{content_id}/tags")
    def add(self, content_id: str, tags: Iterable[str | Mapping[str, Any]]) -> Content:
        """Manual tags: names, or ``{"name", "score"}``."""
        return self._send(calls.tags_add(content_id, tags))

    @route("POST", "/v1/content/{content_id}/tags/{name}:accept")
    def accept(self, content_id: str, name: str) -> Content:
        return self._send(calls.tag_action(content_id, name, "accept"))

    @route("POST", "/v1/content/{content_id}/tags/{name}:reject")
    def reject(self, content_id: str, name: str) -> Content:
        return self._send(calls.tag_action(content_id, name, "reject"))

    @route("DELETE", "/v1/content/{content_id}/tags/{name}")
    def delete(self, content_id: str, name: str) -> None:
        self._send(calls.tag_delete(content_id, name))


class VocabularyAPI(_Area):
    @route("GET", "/v1/vocabulary")
    def get(self) -> Vocabulary:
        return self._send(Call("GET", "/v1/vocabulary"))

    @route("PUT", "/v1/vocabulary")
    def put(
        self,
        entries: Sequence[Mapping[str, Any]],
        facets: Sequence[Mapping[str, Any]] | None = None,
    ) -> Vocabulary:
        """Replace the vocabulary: entries ``{"name", "descriptions", "facet"?, "threshold"?}``."""
        return self._send(calls.vocabulary_put(entries, facets))


class TaggersAPI(_Area):
    @route("POST", "/v1/taggers")
    def create(
        self, name: str, *, kind: str, labels: Sequence[str], mode: str | None = None
    ) -> Tagger:
        return self._send(calls.tagger_create(name, kind, labels, mode))

    @route("GET", "/v1/taggers")
    def list(self) -> list[Tagger]:
        return self._send(Call("GET", "/v1/taggers"))["items"]

    @route("GET", "/v1/taggers/{tagger_id}")
    def get(self, tagger_id: str) -> Tagger:
        return self._send(Call("GET", f"/v1/taggers/{seg(tagger_id)}"))

    @route("POST", "/v1/taggers/{tagger_id}/examples")
    def add_examples(
        self, tagger_id: str, examples: Iterable[Mapping[str, str] | tuple[str, str]]
    ) -> ExamplesAdded:
        """``(content_id, label)`` pairs or ``{"content_id", "label"}``."""
        return self._send(calls.tagger_examples(tagger_id, examples))

    @route("POST", "/v1/taggers/{tagger_id}/train")
    def train(self, tagger_id: str) -> Job:
        body = self._send(Call("POST", f"/v1/taggers/{seg(tagger_id)}/train"))
        return self._client.jobs.get(body["job_id"])


class ModelsAPI(_Area):
    @route("GET", "/v1/models")
    def list(self, *, kind: str | None = None) -> list[ModelVersion]:
        return self._send(Call("GET", "/v1/models", params={"kind": kind}))["items"]

    @route("POST", "/v1/models/{name}/versions/{version}:activate")
    def activate(self, name: str, version: str) -> ModelVersion:
        return self._send(calls.model_activate(name, version))
