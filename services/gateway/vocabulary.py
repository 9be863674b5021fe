"""The tenant's vocabulary and its facets: validation and storage behind ``/v1/vocabulary``.

``PUT /v1/vocabulary`` takes either the original body, a bare list of entries (every entry
independent, as before facets existed), or ``{"facets": [...], "entries": [...]}``. Both
replace the whole vocabulary in one transaction, so a facet and its entries never disagree.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from services.gateway.errors import Invalid
from shared.db.models import VocabularyEntry, VocabularyFacet
from shared.db.vocabulary import vocabulary_rows
from shared.schemas.tagging import (
    FacetPublic,
    Vocabulary,
    VocabularyEntryIn,
    VocabularyEntryPublic,
    VocabularyIn,
)


def read_vocabulary(session: Session, tenant_id: str) -> Vocabulary:
    facets, rows = vocabulary_rows(session, tenant_id)
    return Vocabulary(
        facets=[
            FacetPublic(
                name=f.name,
                mode=f.mode,
                allow_none=f.allow_none,
                none_below=f.none_below,
            )
            for f in facets
        ],
        entries=[
            VocabularyEntryPublic(
                name=r.name,
                descriptions=list(r.descriptions or []),
                facet=r.facet,
                threshold=r.threshold,
            )
            for r in rows
        ],
    )


def check_vocabulary(body: VocabularyIn) -> None:
    """422 for what a schema cannot see: repeats and entries or options that do not fit."""
    names = [e.name for e in body.entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise Invalid(f"vocabulary names repeat: {', '.join(repeated)}")
    facet_names = [f.name for f in body.facets]
    repeated = sorted({n for n in facet_names if facet_names.count(n) > 1})
    if repeated:
        raise Invalid(f"facet names repeat: {', '.join(repeated)}")
    modes = {f.name: f.mode for f in body.facets}
    for f in body.facets:
        if f.mode == "multi" and (f.allow_none or f.none_below is not None):
            # A multi facet already answers nothing when no entry reaches its threshold.
            raise Invalid(f"facet {f.name!r}: allow_none/none_below are for single facets")
        if f.none_below is not None and not f.allow_none:
            raise Invalid(f"facet {f.name!r}: none_below needs allow_none: true")
    unknown = sorted({e.facet for e in body.entries if e.facet and e.facet not in modes})
    if unknown:
        raise Invalid(
            f"entries name undefined facet(s) {', '.join(map(repr, unknown))}; define them "
            'in "facets"',
            details={"unknown_facets": unknown},
        )
    in_single = sorted(
        e.name
        for e in body.entries
        if e.threshold is not None and modes.get(e.facet or "") == "single"
    )
    if in_single:
        raise Invalid(
            f"entries of a single facet have no threshold (the facet answers its best entry; "
            f"use allow_none and none_below): {', '.join(in_single)}",
        )


def replace_vocabulary(
    session: Session, tenant_id: str, body: list[VocabularyEntryIn] | VocabularyIn
) -> Vocabulary:
    wanted = body if isinstance(body, VocabularyIn) else VocabularyIn(entries=body)
    check_vocabulary(wanted)
    session.execute(delete(VocabularyEntry).where(VocabularyEntry.tenant_id == tenant_id))
    session.execute(delete(VocabularyFacet).where(VocabularyFacet.tenant_id == tenant_id))
    for f in wanted.facets:
        session.add(
            VocabularyFacet(
                tenant_id=tenant_id,
                name=f.name,
                mode=f.mode,
                allow_none=f.allow_none,
                none_below=f.none_below,
            )
        )
    for e in wanted.entries:
        session.add(
            VocabularyEntry(
                tenant_id=tenant_id,
                name=e.name,
                descriptions=list(e.descriptions),
                facet=e.facet,
                threshold=e.threshold,
            )
        )
    session.commit()
    return read_vocabulary(session, tenant_id)


# Shown in the OpenAPI page: a section facet (one per item) beside an independent entry.
VOCABULARY_EXAMPLE = {
    "facets": [{"name": "section", "mode": "single"}],
    "entries": [
        {"name": "sports", "facet": "section", "descriptions": ["games, teams and players"]},
        {"name": "business", "facet": "section", "descriptions": ["companies and markets"]},
        {"name": "recipes", "descriptions": ["cooking and baking"], "threshold": 0.6},
    ],
}
