"""What the API answers: TypedDicts over the JSON as it comes, and a few dataclasses with behaviour.

The TypedDicts are the JSON as parsed (timestamps stay ISO 8601 strings), so nothing is copied
or validated twice; the server's OpenAPI page has every field's meaning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypedDict

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


class Asset(TypedDict):
    role: str
    mime_type: str
    byte_size: int
    width: int | None
    height: int | None
    sha256: str
    url: str


class Tag(TypedDict):
    name: str
    score: float
    source: str
    origin: str  # auto | manual | accepted
    level: str | None  # class | concept for the image tagger's tags


class Content(TypedDict):
    id: str
    external_id: str | None
    kind: str
    title: str | None
    text: str | None
    metadata: dict[str, Any]
    status: str  # pending | ready | failed
    phash: str | None
    duplicate_of: str | None
    assets: list[Asset]
    tags: list[Tag]
    created_at: str
    updated_at: str


class ContentPage(TypedDict):
    items: list[Content]
    next_cursor: str | None


class Accepted(TypedDict):
    id: str
    job_id: str
    status: str
    created: bool


class BatchAccepted(TypedDict):
    items: list[Accepted]
    job_id: str


class SimilarItem(TypedDict):
    id: str
    external_id: str | None
    kind: str
    title: str | None
    score: float


class SimilarPage(TypedDict):
    content_id: str
    space: str
    model: str
    items: list[SimilarItem]


class Vocabulary(TypedDict):
    facets: list[dict[str, Any]]
    entries: list[dict[str, Any]]


class Tagger(TypedDict):
    id: str
    name: str
    kind: str
    labels: list[str]
    mode: str
    model: str
    active_version: str | None
    examples_per_label: dict[str, int]
    metrics: dict[str, Any] | None
    trained_at: str | None
    created_at: str


class ExamplesAdded(TypedDict):
    added: int
    examples_per_label: dict[str, int]


class ModelVersion(TypedDict, total=False):
    name: str
    version: str
    kind: str
    model: str
    active: bool
    scope: str  # bundled | tenant
    metrics: dict[str, Any]
    job_id: str | None
    created_at: str | None


class InteractionsAccepted(TypedDict):
    received: int
    stored: int
    duplicates: int
    items_created: int


class Event(TypedDict, total=False):
    user_id: str
    item_id: str
    event_type: str
    value: float | None
    timestamp: str | None
    event_id: str | None


class RecommenderConfig(TypedDict):
    event_weights: dict[str, float]
    half_life_days: float | None
    trending_half_life_days: float


class RecommendedItem(TypedDict):
    id: str
    external_id: str | None
    title: str | None
    kind: str
    score: float
    reason: str
    source: str  # cf | content | trending | popular | session


class Recommendations(TypedDict, total=False):
    user_id: str | None
    item_id: str | None
    model_version: str | None
    items: list[RecommendedItem]


class HistoryEvent(TypedDict):
    item_id: str
    external_id: str | None
    title: str | None
    kind: str
    event_type: str
    value: float | None
    occurred_at: str


class UserHistory(TypedDict):
    user_id: str
    events: list[HistoryEvent]  # newest first


class Generation(TypedDict):
    job_id: str
    status: str
    result: dict[str, Any] | None
    error: str | None


class Webhook(TypedDict):
    id: str
    url: str
    job_types: list[str]
    active: bool
    created_at: str


class WebhookCreated(Webhook):
    secret: str


@dataclass
class JobData:
    id: str
    type: str
    status: str  # queued | running | succeeded | failed | cancelled
    progress: float
    error: str | None
    result: dict[str, Any] | None
    params: dict[str, Any]
    content_id: str | None
    attempts: int
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    _api: Any = field(default=None, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        # Not asdict(): it would deep-copy the client held in ``_api``.
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_api"}


def job_fields(body: dict[str, Any]) -> dict[str, Any]:
    names = [f.name for f in fields(JobData) if f.name != "_api"]
    return {n: body.get(n) for n in names}


class Job(JobData):
    """A job read through the sync client; ``wait()`` polls it to a final state."""

    def refresh(self) -> Job:
        return self._api.get(self.id)

    def wait(self, timeout: float = 600.0, *, raise_on_failure: bool = False) -> Job:
        return self._api.wait(self.id, timeout=timeout, raise_on_failure=raise_on_failure)

    def cancel(self) -> Job:
        return self._api.cancel(self.id)


class AsyncJob(JobData):
    """A job read through the async client; ``await job.wait()``."""

    async def refresh(self) -> AsyncJob:
        return await self._api.get(self.id)

    async def wait(self, timeout: float = 600.0, *, raise_on_failure: bool = False) -> AsyncJob:
        return await self._api.wait(self.id, timeout=timeout, raise_on_failure=raise_on_failure)

    async def cancel(self) -> AsyncJob:
        return await self._api.cancel(self.id)


UploadStatus = Literal["created", "updated", "exists", "skipped", "failed"]


@dataclass
class UploadResult:
    """One file of ``upload_folder``: ``exists`` = the external_id was already there (409),
    ``skipped`` = not sent because a listing showed it (``skip_existing``)."""

    path: str
    external_id: str
    status: UploadStatus
    id: str | None = None
    job_id: str | None = None
    error: str | None = None
    error_code: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportSummary:
    """Totals of ``interactions.import_csv``; ``rows_done`` counts from the file's first row."""

    rows_done: int = 0
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    items_created: int = 0
    batches: int = 0

    def add(self, rows: int, answer: InteractionsAccepted) -> None:
        self.rows_done += rows
        self.sent += answer["received"]
        self.stored += answer["stored"]
        self.duplicates += answer["duplicates"]
        self.items_created += answer["items_created"]
        self.batches += 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
