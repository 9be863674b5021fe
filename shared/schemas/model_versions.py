"""The public form of a model version, shared by the tagging and recommender APIs."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from shared.db.models import ModelVersion
    from shared.inference.manifest import Manifest


class TrainAccepted(BaseModel):
    job_id: str
    status: str


class ModelVersionPublic(BaseModel):
    name: str
    version: str
    kind: str
    # The recommender API named the kind `model` before the two forms were one; both stay.
    model: str = Field(description="the same as `kind`")
    active: bool
    scope: Literal["bundled", "tenant"] = Field(
        description="bundled models serve every tenant; tenant models only their owner"
    )
    metrics: dict[str, Any]
    job_id: str | None = None
    created_at: datetime | str | None = None

    @classmethod
    def from_row(cls, row: ModelVersion) -> ModelVersionPublic:
        """A tenant's version, as recorded in SQL."""
        return cls(
            name=row.name,
            version=row.version,
            kind=row.kind,
            model=row.kind,
            active=row.active,
            scope="tenant",
            metrics=row.metrics or {},
            job_id=row.job_id,
            created_at=row.created_at,
        )

    @classmethod
    def from_manifest(cls, manifest: Manifest, *, active: bool) -> ModelVersionPublic:
        """A bundled version, as published on disk."""
        return cls(
            name=manifest.name,
            version=manifest.version,
            kind=manifest.kind,
            model=manifest.kind,
            active=active,
            scope="bundled",
            metrics=manifest.metrics,
            created_at=manifest.created_at,
        )


class ModelList(BaseModel):
    items: list[ModelVersionPublic]
