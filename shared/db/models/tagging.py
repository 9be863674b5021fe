"""A tenant's vocabulary (zero-shot tags) and its own trained taggers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models.base import Base, UTCDateTime, new_id, utcnow


class VocabularyEntry(Base):
    """A tenant's own tag: zero-shot matched against text and image labels."""

    __tablename__ = "vocabulary_entries"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_vocabulary_tenant_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    descriptions: Mapped[list[Any]] = mapped_column(default=list)
    # The facet (a VocabularyFacet name of the tenant) it competes in; NULL: an independent
    # multi-label entry, as before facets existed.
    facet: Mapped[str | None] = mapped_column(String(100), nullable=True, default=None)
    # Its own cut on the calibrated probability (multi facets); NULL: the model's default.
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class VocabularyFacet(Base):
    """A group of vocabulary entries: ``single`` (exactly one per item) or ``multi``."""

    __tablename__ = "vocabulary_facets"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_vocabulary_facet_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(16), default="multi")
    # single only: answer nothing when the best entry's probability is under none_below.
    allow_none: Mapped[bool] = mapped_column(Boolean, default=False)
    none_below: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Tagger(Base):
    """A tenant's own classifier over stored embeddings, trained from examples and corrections."""

    __tablename__ = "taggers"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_tagger_tenant_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # image | text: the embedding space it reads
    labels: Mapped[list[Any]] = mapped_column(default=list)
    # single: one label per item, always its best (softmax); multi: one-vs-rest, thresholded.
    mode: Mapped[str] = mapped_column(String(16), default="multi", server_default="multi")
    # When the last successful training read its examples; newer examples or corrections make
    # the tagger due for scheduled retraining.
    trained_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class TaggerExample(Base):
    __tablename__ = "tagger_examples"
    __table_args__ = (
        UniqueConstraint("tagger_id", "content_id", "label", name="uq_tagger_example"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tagger_id: Mapped[str] = mapped_column(ForeignKey("taggers.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    content_id: Mapped[str] = mapped_column(
        ForeignKey("content_items.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
