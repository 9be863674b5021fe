"""Content items with their assets, tags and embeddings."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from shared import phash_index
from shared.db.models.base import Base, UTCDateTime, new_id, utcnow

if TYPE_CHECKING:
    from shared.storage import StoredBlob


class ContentKind(enum.StrEnum):
    image = "image"
    text = "text"
    generated = "generated"
    item = "item"  # a bare item known only from interactions


class ContentStatus(enum.StrEnum):
    pending = "pending"
    ready = "ready"
    failed = "failed"


class TagOrigin(enum.StrEnum):
    auto = "auto"
    manual = "manual"
    accepted = "accepted"
    rejected = "rejected"


# Tags that clients see and that count for search and recommendations (rejected ones are kept
# only so re-tagging does not add them again).
VISIBLE_ORIGINS = (TagOrigin.auto, TagOrigin.manual, TagOrigin.accepted)
# A person's decision: positive examples for tenant taggers.
HUMAN_ORIGINS = (TagOrigin.manual, TagOrigin.accepted)


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
