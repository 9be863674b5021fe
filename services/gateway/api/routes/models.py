"""Model versions: the bundled models and the tenant's own, and switching the tenant's."""

from __future__ import annotations

from fastapi import APIRouter

from services.gateway import model_versions
from services.gateway.api.deps import ReaderDep, SessionDep, SettingsDep, WriterDep
from shared.schemas.model_versions import ModelList, ModelVersionPublic

router = APIRouter(prefix="/v1", tags=["tagging"])


@router.get("/models", response_model=ModelList)
def list_models(
    principal: ReaderDep,
    session: SessionDep,
    settings: SettingsDep,
    kind: str | None = None,
) -> ModelList:
    """Model versions you can use: the bundled models (shared by every tenant) and your own
    taggers' versions, with their metrics and which one is active."""
    return model_versions.list_models(
        session, settings.models_dir, tenant_id=principal.tenant_id, kind=kind
    )


@router.post("/models/{name}/versions/{version}:activate", response_model=ModelVersionPublic)
def activate_model_version(
    name: str, version: str, principal: WriterDep, session: SessionDep, settings: SettingsDep
) -> ModelVersionPublic:
    """Serve this version of one of your models from now on (workers switch within seconds);
    use it to roll back a retrained tagger. Bundled models are switched by the operator."""
    return model_versions.activate_tenant_version(
        session, settings.models_dir, tenant_id=principal.tenant_id, name=name, version=version
    )
