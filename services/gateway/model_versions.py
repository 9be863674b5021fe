"""Model versions as the API shows them: list them, and let a tenant switch its own.

Bundled models (shared by every tenant) are listed from their directories on disk; tenant models
(taggers, generators, recommenders) from their SQL rows. Activation is
``shared.db.model_versions.activate_version`` everywhere; only the checks around it differ.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.gateway.errors import Conflict, Forbidden, NotFound
from shared.db.model_versions import activate_version
from shared.db.models import ModelVersion
from shared.model_versions import (
    TAGGER_MODEL_PREFIX,
    active_version,
    list_versions,
    recommender_model_name,
    set_active_version,
)
from shared.schemas.model_versions import ModelList, ModelVersionPublic


def bundled_model_names(models_dir: Path) -> list[str]:
    """The models shared by every tenant: the model directories that no tenant owns."""
    return sorted(
        d.name
        for d in (models_dir.iterdir() if models_dir.is_dir() else [])
        # Tenant-owned models (taggers, `<base>__<tenant id>` generators) come from SQL.
        if d.is_dir() and not d.name.startswith((".", TAGGER_MODEL_PREFIX)) and "__" not in d.name
    )


def list_models(
    session: Session, models_dir: Path, *, tenant_id: str, kind: str | None
) -> ModelList:
    items: list[ModelVersionPublic] = []
    for name in bundled_model_names(models_dir):
        current = active_version(models_dir, name)
        items += [
            ModelVersionPublic.from_manifest(m, active=m.version == current)
            for m in list_versions(models_dir, name)
            if not kind or m.kind == kind
        ]
    stmt = select(ModelVersion).where(ModelVersion.tenant_id == tenant_id)
    if kind:
        stmt = stmt.where(ModelVersion.kind == kind)
    rows = sorted(
        session.scalars(stmt).all(),
        key=lambda r: (r.name, int(r.version) if r.version.isdigit() else 0, r.version),
    )
    items += [ModelVersionPublic.from_row(r) for r in rows]
    return ModelList(items=items)


def _tenant_version(
    session: Session, *, tenant_id: str, name: str, version: str
) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(
            ModelVersion.name == name,
            ModelVersion.version == version,
            ModelVersion.tenant_id == tenant_id,
        )
    ).first()


def activate_tenant_version(
    session: Session, models_dir: Path, *, tenant_id: str, name: str, version: str
) -> ModelVersionPublic:
    """Switch one of the tenant's registry models (its ``ACTIVE`` pointer moves with the row)."""
    row = _tenant_version(session, tenant_id=tenant_id, name=name, version=version)
    if row is None:
        owned = session.scalar(
            select(func.count())
            .select_from(ModelVersion)
            .where(ModelVersion.name == name, ModelVersion.tenant_id == tenant_id)
        )
        # Only a bundled model's name gets the 403: another tenant's model (a tagger,
        # `<base>__<tenant id>`) answers 404, as if it did not exist.
        if not owned and name in bundled_model_names(models_dir):
            raise Forbidden(
                f"{name} is a bundled model shared by every tenant; only an operator can "
                "switch its version",
            )
        raise NotFound(f"model {name} has no version {version}")
    activate_version(session, row)
    try:
        set_active_version(models_dir, name, version)
    except Exception as exc:  # ModelError: the files of that version are gone
        session.rollback()
        raise Conflict(f"cannot activate {name} {version}: {exc}") from exc
    session.commit()
    return ModelVersionPublic.from_row(row)


def recommender_versions(session: Session, *, tenant_id: str) -> list[ModelVersionPublic]:
    rows = session.scalars(
        select(ModelVersion)
        .where(
            ModelVersion.tenant_id == tenant_id,
            ModelVersion.name == recommender_model_name(tenant_id),
        )
        .order_by(ModelVersion.version.desc())
    ).all()
    return [ModelVersionPublic.from_row(mv) for mv in rows]


def activate_recommender_version(
    session: Session, models_dir: Path, *, tenant_id: str, version: str
) -> ModelVersionPublic:
    """The recommender reads the active row itself (no ``ACTIVE`` pointer), within its model
    check interval."""
    name = recommender_model_name(tenant_id)
    mv = _tenant_version(session, tenant_id=tenant_id, name=name, version=version)
    if mv is None:
        raise NotFound(f"model version {version} not found")
    artefact = models_dir / "recommender" / tenant_id / version
    if not (artefact / "meta.json").is_file():
        raise Conflict(f"the files of model version {version} are gone; train a new one")
    activate_version(session, mv)
    session.commit()
    return ModelVersionPublic.from_row(mv)
