"""A tenant's vocabulary as stored: read by the gateway's API and by the taggers alike."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import VocabularyEntry, VocabularyFacet


def vocabulary_rows(
    session: Session, tenant_id: str
) -> tuple[Sequence[VocabularyFacet], Sequence[VocabularyEntry]]:
    """The tenant's facets and entries, each by name."""
    facets = session.scalars(
        select(VocabularyFacet)
        .where(VocabularyFacet.tenant_id == tenant_id)
        .order_by(VocabularyFacet.name)
    ).all()
    entries = session.scalars(
        select(VocabularyEntry)
        .where(VocabularyEntry.tenant_id == tenant_id)
        .order_by(VocabularyEntry.name)
    ).all()
    return facets, entries
