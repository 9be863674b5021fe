"""Request and response bodies of the recommender API (gateway and internal service)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Default weights of the built-in event types; a tenant may override them and add its own.
# `rating` multiplies the event's `value`, so a 1-5 rating weighs 1-5 views.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.0,
    "like": 3.0,
    "share": 4.0,
    "purchase": 5.0,
    "rating": 1.0,
    "dislike": -5.0,
}

TENANT_HEADER = "X-Atelier-Tenant"


class InteractionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=255)
    item_id: str = Field(min_length=1, max_length=255)
    event_type: str = Field(min_length=1, max_length=64)
    value: float | None = Field(default=None, allow_inf_nan=False)
    timestamp: datetime | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=255)


class InteractionsAccepted(BaseModel):
    received: int
    stored: int = Field(description="new events; the rest were already stored (same event_id)")
    duplicates: int
    items_created: int = Field(description="unknown item ids stored as bare items")


class RecommenderConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_weights: dict[str, float] = Field(
        default_factory=dict,
        description="weight per event type; merged over the defaults; negative = dislike",
    )
    half_life_days: float | None = Field(
        default=None, gt=0, description="time decay of training events; null = no decay"
    )
    trending_half_life_days: float = Field(default=7.0, gt=0)

    @field_validator("event_weights")
    @classmethod
    def _names(cls, v: dict[str, float]) -> dict[str, float]:
        for name, w in v.items():
            if not name or len(name) > 64:
                raise ValueError(f"event type {name!r} must have 1 to 64 characters")
            if w != w or abs(w) > 1e6:
                raise ValueError(f"weight of {name!r} must be a finite number")
        return v


class RecommenderConfigPublic(BaseModel):
    event_weights: dict[str, float]
    half_life_days: float | None
    trending_half_life_days: float


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget_s: float = Field(default=300.0, gt=0, le=3600)
    candidates: list[str] | None = Field(
        default=None, description="model families to try (ease, als, bpr, itemknn, puresvd)"
    )


class TrainAccepted(BaseModel):
    job_id: str
    status: str


class ModelVersionPublic(BaseModel):
    version: str
    model: str
    active: bool
    metrics: dict[str, Any]
    job_id: str | None
    created_at: datetime


class RecommendedItem(BaseModel):
    id: str
    external_id: str | None
    title: str | None
    kind: str
    score: float
    reason: str
    source: Literal["cf", "content", "trending", "popular", "session"]


class RecommendationList(BaseModel):
    user_id: str | None = None
    item_id: str | None = None
    model_version: str | None
    items: list[RecommendedItem]
