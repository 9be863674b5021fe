"""SQLAlchemy 2.0 typed models: the SQL store is the source of truth for every service."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from shared import phash_index

if TYPE_CHECKING:
    from shared.storage import StoredBlob

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on every backend.

    SQLite keeps no zone and hands back naive values; every timestamp we store is UTC, so the
    zone is put back here, once, instead of in each reader. For that to hold, an aware value
    with another offset is converted to UTC on the way in (SQLite would otherwise keep its wall
    time and drop the offset: 12:00+02:00 read back as 12:00Z).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


BigId = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


class ContentKind(enum.StrEnum):
    image = "image"
    text = "text"
    generated = "generated"
    item = "item"  # a bare item known only from interactions


class ContentStatus(enum.StrEnum):
    pending = "pending"
    ready = "ready"
    failed = "failed"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class TagOrigin(enum.StrEnum):
    auto = "auto"
    manual = "manual"
    accepted = "accepted"
    rejected = "rejected"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    tenant: Mapped[Tenant] = relationship()


class ContentItem(Base):
    __tablename__ = "content_items"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id", name="uq_content_tenant_external_id"),
        Index("ix_content_tenant_created", "tenant_id", "created_at", "id"),
        # Near-duplicate lookups by pHash block (shared/phash_index.py).
        *(Index(f"ix_content_{name}", "tenant_id", name) for name in phash_index.COLUMNS),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16), default=ContentKind.text)
    title: Mapped[str | None] = mapped_column(String(1000))
    text: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ContentStatus.pending)
    phash: Mapped[str | None] = mapped_column(String(16))
    # The pHash's four 16-bit blocks, kept in step with it by _split_phash.
    phash_b0: Mapped[int | None] = mapped_column(Integer)
    phash_b1: Mapped[int | None] = mapped_column(Integer)
    phash_b2: Mapped[int | None] = mapped_column(Integer)
    phash_b3: Mapped[int | None] = mapped_column(Integer)
    duplicate_of: Mapped[str | None] = mapped_column(
        ForeignKey("content_items.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    assets: Mapped[list[Asset]] = relationship(
        back_populates="content", cascade="all, delete-orphan", passive_deletes=True
    )
    tags: Mapped[list[Tag]] = relationship(
        back_populates="content", cascade="all, delete-orphan", passive_deletes=True
    )

    @validates("phash")
    def _split_phash(self, _key: str, value: str | None) -> str | None:
        # Every ORM write of a pHash (constructor or assignment) updates its blocks with it.
        for name, block in phash_index.columns(value).items():
            setattr(self, name, block)
        return value


class Asset(Base):
    __tablename__ = "assets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    content_id: Mapped[str] = mapped_column(
        ForeignKey("content_items.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))  # original | thumbnail | working
    storage_key: Mapped[str] = mapped_column(String(128), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    mime_type: Mapped[str] = mapped_column(String(100))
    byte_size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    content: Mapped[ContentItem] = relationship(back_populates="assets")

    @classmethod
    def stored(
        cls, blob: StoredBlob, *, role: str, mime_type: str, width: int | None, height: int | None
    ) -> Asset:
        """The row for a blob just written to storage."""
        return cls(
            role=role,
            storage_key=blob.key,
            sha256=blob.sha256,
            mime_type=mime_type,
            byte_size=blob.size,
            width=width,
            height=height,
        )


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (
        UniqueConstraint("content_id", "name", "source", name="uq_tag_content_name_source"),
        Index("ix_tags_tenant_name", "tenant_id", "name"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    content_id: Mapped[str] = mapped_column(
        ForeignKey("content_items.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Float, default=1.0)
    source: Mapped[str] = mapped_column(String(200))  # model name:version, or "manual"
    origin: Mapped[str] = mapped_column(String(16), default=TagOrigin.auto)
    # Image model tags only: "class" (the model's output) or "concept" (a WordNet parent).
    level: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    content: Mapped[ContentItem] = relationship(back_populates="tags")


class Embedding(Base):
    """One vector per content item and embedding space (e.g. image, text)."""

    __tablename__ = "embeddings"
    __table_args__ = (
        # Covers the similar-content cache's freshness check (count and newest per tenant,
        # space and model: services/gateway/similar.py) without touching the vectors; its
        # prefix serves every by-tenant read.
        Index(
            "ix_embeddings_tenant_space_model_created", "tenant_id", "space", "model", "created_at"
        ),
    )

    content_id: Mapped[str] = mapped_column(
        ForeignKey("content_items.id", ondelete="CASCADE"), primary_key=True
    )
    space: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(200))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_published", "status", "published_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # NULL for system jobs (building the bundled models: shared/bundled.py), as bundled models'
    # rows in model_versions have no tenant either.
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    content_id: Mapped[str | None] = mapped_column(
        ForeignKey("content_items.id", ondelete="SET NULL"), index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Celery task id of the current attempt: a redelivery of the same message may re-claim a
    # running job (its worker died), a duplicate publish may not.
    task_id: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


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


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_name_version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))  # registry name, tenant-scoped names embed it
    version: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


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


class Webhook(Base):
    """Where to POST a signed notification when a tenant's job finishes."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))
    # Job types to notify about; empty means every job.
    job_types: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
