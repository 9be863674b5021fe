"""Tag review: add manual tags, accept or reject automatic ones, remove manual ones."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.gateway import tag_review
from services.gateway.api.deps import SessionDep, WriterDep
from shared.schemas.content import ContentPublic, TagsCreate

router = APIRouter(prefix="/v1", tags=["tagging"])


@router.post("/content/{content_id}/tags", response_model=ContentPublic)
def add_tags(
    content_id: str, body: TagsCreate, principal: WriterDep, session: SessionDep
) -> ContentPublic:
    """Add manual tags (``{"tags": [{"name": "...", "score": 1.0}]}``, up to 100).

    A manual tag overrides an earlier rejection of the same name, is never replaced by
    re-tagging, and is a positive example for tenant taggers with that label.
    """
    return tag_review.add_manual_tags(
        session, tenant_id=principal.tenant_id, content_id=content_id, body=body
    )


@router.post("/content/{content_id}/tags/{name}:accept", response_model=ContentPublic)
def accept_tag(
    content_id: str, name: str, principal: WriterDep, session: SessionDep
) -> ContentPublic:
    """Confirm an automatic tag: it stays through re-tagging and is a positive example."""
    return tag_review.review_tag(
        session, tenant_id=principal.tenant_id, content_id=content_id, name=name, accept=True
    )


@router.post("/content/{content_id}/tags/{name}:reject", response_model=ContentPublic)
def reject_tag(
    content_id: str, name: str, principal: WriterDep, session: SessionDep
) -> ContentPublic:
    """Reject a tag: it disappears, is never added again by re-tagging of this item, and is
    a negative example for tenant taggers with that label."""
    return tag_review.review_tag(
        session, tenant_id=principal.tenant_id, content_id=content_id, name=name, accept=False
    )


@router.delete("/content/{content_id}/tags/{name}", status_code=204)
def delete_tag(content_id: str, name: str, principal: WriterDep, session: SessionDep) -> Response:
    """Remove a manual tag (automatic ones are rejected instead, so re-tagging respects it)."""
    tag_review.delete_manual_tag(
        session, tenant_id=principal.tenant_id, content_id=content_id, name=name
    )
    return Response(status_code=204)
