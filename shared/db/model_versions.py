"""Model versions in SQL: the one rule for which version of a model is active."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.db.models import ModelVersion, new_id


def activate_version(session: Session, row: ModelVersion) -> ModelVersion:
    """Make ``row`` the only active version of its model (``row.name``).

    ``row`` may be new: it is added to the session. The caller commits, and moves the on-disk
    ``ACTIVE`` pointer (shared/model_versions.py) where its model has one.
    """
    if row.id is None:
        # The id is known before the flush, so the update below spares exactly this row.
        row.id = new_id()
        session.add(row)
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.name == row.name, ModelVersion.id != row.id)
        .values(active=False)
    )
    row.active = True
    return row


def record_version(
    session: Session,
    *,
    tenant_id: str | None,
    name: str,
    version: str,
    kind: str,
    metrics: dict[str, Any],
    job_id: str | None,
    activate: bool = True,
) -> ModelVersion:
    """Add the row of a newly trained version, active (the others then inactive) or not."""
    row = ModelVersion(
        tenant_id=tenant_id,
        name=name,
        version=version,
        kind=kind,
        metrics=metrics,
        active=False,
        job_id=job_id,
    )
    if activate:
        return activate_version(session, row)
    session.add(row)
    return row
