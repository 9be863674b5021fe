"""Interactions and per-tenant recommender settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models.base import Base, BigId, UTCDateTime, utcnow


class Interaction(Base):
    __tablename__ = "interactions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_id", name="uq_interaction_tenant_event_id"),
        Index("ix_interactions_tenant_user", "tenant_id", "user_id", "occurred_at"),
        Index("ix_interactions_tenant_time", "tenant_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    item_id: Mapped[str] = mapped_column(ForeignKey("content_items.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    event_id: Mapped[str | None] = mapped_column(String(255))


class RecommenderConfig(Base):
    """Per-tenant recommender settings: event weights (negative for dislikes) and time decay."""

    __tablename__ = "recommender_configs"

    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    event_weights: Mapped[dict[str, Any]] = mapped_column(default=dict)
    half_life_days: Mapped[float | None] = mapped_column(Float)
    trending_half_life_days: Mapped[float] = mapped_column(Float, default=7.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
