"""Similar content: the tenant's nearest items by image or text embedding."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.gateway.api.deps import ReaderDep, SessionDep, SimilarIndexDep
from services.gateway.similar import similar_page
from shared.schemas.tagging import SimilarPage, Space

router = APIRouter(prefix="/v1", tags=["tagging"])


@router.get("/content/{content_id}/similar", response_model=SimilarPage)
def similar_content(
    content_id: str,
    principal: ReaderDep,
    session: SessionDep,
    similar: SimilarIndexDep,
    space: Space = "image",
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SimilarPage:
    """The tenant's items nearest to this one by cosine similarity of their ``image`` (visual)
    or ``text`` embeddings, best first."""
    return similar_page(
        session,
        similar,
        tenant_id=principal.tenant_id,
        content_id=content_id,
        space=space,
        limit=limit,
    )
