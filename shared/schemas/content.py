from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.schemas.text import RequestModel


class ContentCreate(RequestModel):
    """JSON body of ``POST /v1/content`` for text-only content."""

    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    title: str | None = Field(default=None, max_length=1000)
    text: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ContentBatchCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ContentCreate] = Field(min_length=1)


# Of an image model's tag: the model's own class, or a WordNet parent concept above classes.
TagLevel = Literal["class", "concept"]


class AssetPublic(BaseModel):
    role: str
    mime_type: str
    byte_size: int
    width: int | None
    height: int | None
    sha256: str
    url: str


class TagPublic(BaseModel):
    name: str
    score: float
    source: str
    origin: str
    level: TagLevel | None = Field(
        default=None,
        description='image model tags: "class" (the model\'s own class) or "concept" (a parent'
        " concept over several classes); null for other tags",
    )


class ContentPublic(BaseModel):
    id: str
    external_id: str | None
    kind: str
    title: str | None
    text: str | None
    metadata: dict[str, Any]
    status: str
    phash: str | None
    duplicate_of: str | None
    assets: list[AssetPublic]
    tags: list[TagPublic]
    created_at: datetime
    updated_at: datetime


class ContentAccepted(BaseModel):
    id: str
    job_id: str
    status: str
    created: bool = Field(description="false when an existing external_id was updated")


class ContentBatchAccepted(BaseModel):
    items: list[ContentAccepted]
    job_id: str


class ContentPage(BaseModel):
    items: list[ContentPublic]
    next_cursor: str | None


class TagCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    score: float = Field(default=1.0, ge=0.0, le=1.0)


class TagsCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[TagCreate] = Field(min_length=1, max_length=100)
