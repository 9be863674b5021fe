from __future__ import annotations

from datetime import datetime

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from shared.schemas.text import RequestModel


class WebhookCreate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    job_types: list[str] = Field(default_factory=list, max_length=20)


class WebhookPublic(BaseModel):
    id: str
    url: str
    job_types: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="HMAC-SHA256 key for X-Atelier-Signature; shown once")
