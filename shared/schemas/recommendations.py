"""Request and response bodies of the recommender API (gateway and internal service)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from shared.schemas.text import RequestModel

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

# The sane range of an interaction event. An event outside it is refused (422 naming the event),
# never stored: training multiplies weights by `value` and time decay and trending read the
# timestamp, so one absurd event would swamp a tenant's model.
#
# Ratings are 1-5 and play or view counts run to tens of thousands; 1e6 leaves ample headroom
# while keeping weight x value sums far from float overflow (1e308 x 5 is inf).
MAX_INTERACTION_VALUE = 1_000_000.0
# No event predates the Unix epoch; earlier dates are placeholders ("0001-01-01") or bugs.
MIN_INTERACTION_TIME = datetime(1970, 1, 1, tzinfo=UTC)
# Clocks of CMS hosts drift and events queue up across time zones; more than a day ahead of the
# server is a bug ("9999-12-31" for "never") and would stay "the latest" event for ever.
MAX_INTERACTION_CLOCK_SKEW = timedelta(days=1)


def interaction_value_error(value: float) -> str | None:
    """Why an event's ``value`` is out of range, or None when it is fine."""
    if -MAX_INTERACTION_VALUE <= value <= MAX_INTERACTION_VALUE:
        return None
    return (
        f"must be between -{MAX_INTERACTION_VALUE:,.0f} and {MAX_INTERACTION_VALUE:,.0f}; "
        f"got {value:g}"
    )


def interaction_time_error(timestamp: datetime, now: datetime) -> str | None:
    """Why an event's timestamp is out of range, or None when it is fine.

    ``timestamp`` without an offset is read as UTC, as ingestion stores it; ``now`` is the
    server's clock (timezone-aware).
    """
    ts = timestamp if timestamp.tzinfo is not None else timestamp.replace(tzinfo=UTC)
    if ts < MIN_INTERACTION_TIME:
        return f"must not be before 1970-01-01T00:00:00Z; got {ts.isoformat()}"
    if ts > now + MAX_INTERACTION_CLOCK_SKEW:
        return (
            f"must not be more than {MAX_INTERACTION_CLOCK_SKEW.total_seconds() / 3600:g} hours "
            f"ahead of the server clock ({now.astimezone(UTC).isoformat(timespec='seconds')}); "
            f"got {ts.isoformat()}"
        )
    return None


class InteractionIn(RequestModel):
    """One interaction event.

    ``value`` and ``timestamp`` must lie in the sane range above. Validation reads "now" from
    the validation context (``context={"now": ...}``) when given, else from the clock.
    """

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=255)
    item_id: str = Field(min_length=1, max_length=255)
    event_type: str = Field(min_length=1, max_length=64)
    value: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description=f"at most {MAX_INTERACTION_VALUE:,.0f} in absolute value",
    )
    timestamp: datetime | None = Field(
        default=None,
        description="ISO 8601, no offset = UTC; from 1970-01-01T00:00:00Z to 1 day ahead of "
        "the server clock; null = now",
    )
    event_id: str | None = Field(default=None, min_length=1, max_length=255)

    @field_validator("value")
    @classmethod
    def _value_range(cls, v: float | None) -> float | None:
        if v is not None and (msg := interaction_value_error(v)):
            raise PydanticCustomError("out_of_range", msg)
        return v

    @field_validator("timestamp")
    @classmethod
    def _time_range(cls, v: datetime | None, info: ValidationInfo) -> datetime | None:
        if v is not None:
            now = (info.context or {}).get("now") or datetime.now(UTC)
            if msg := interaction_time_error(v, now):
                raise PydanticCustomError("out_of_range", msg)
        return v


class InteractionsAccepted(BaseModel):
    received: int
    stored: int = Field(description="new events; the rest were already stored (same event_id)")
    duplicates: int
    items_created: int = Field(description="unknown item ids stored as bare items")


class RecommenderConfigIn(RequestModel):
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


class TrainRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    budget_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="tuning time budget in seconds (default: 90 s at 100k events, 600 s at 1M)",
    )
    candidates: list[str] | None = Field(
        default=None,
        description="model families to try (ease, rp3beta, als, itemknn, bpr, puresvd)",
    )


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


class HistoryEvent(BaseModel):
    item_id: str
    external_id: str | None
    title: str | None
    kind: str
    event_type: str
    value: float | None
    occurred_at: datetime


class UserHistory(BaseModel):
    user_id: str
    events: list[HistoryEvent] = Field(description="newest first")
