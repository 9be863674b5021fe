"""The tenant's vocabulary: the tags it wants zero-shot on text and images."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from services.gateway.api.deps import ReaderDep, SessionDep, WriterDep
from services.gateway.errors import Invalid
from services.gateway.vocabulary import VOCABULARY_EXAMPLE, read_vocabulary, replace_vocabulary
from shared.schemas.tagging import (
    MAX_VOCABULARY_ENTRIES,
    Vocabulary,
    VocabularyEntryIn,
    VocabularyIn,
)

router = APIRouter(prefix="/v1", tags=["tagging"])


@router.put("/vocabulary", response_model=Vocabulary, summary="Replace the tenant's vocabulary")
def put_vocabulary(
    body: Annotated[list[VocabularyEntryIn] | VocabularyIn, Body(examples=[VOCABULARY_EXAMPLE])],
    principal: WriterDep,
    session: SessionDep,
) -> Vocabulary:
    """The tags you want zero-shot on text and images: ``[{"name", "descriptions": [...]}]``,
    or ``{"facets": [...], "entries": [...]}`` to group entries into facets (docs/facets.md).

    At most 500 entries; names 1-100 characters, unique (compared lower-case, stored
    lower-case); up to 10 descriptions of up to 300 characters each. A one-sentence
    description ("cats, dogs and other animals") tags far better than a bare name. An entry
    without a facet is tagged when its calibrated probability reaches its ``threshold``
    (default 0.5). A ``single`` facet gives every item exactly one of its entries, the best,
    with its probability (nothing only with ``allow_none``); a ``multi`` facet each entry at or
    above its threshold. The new vocabulary applies to content tagged from now on; re-upload
    with ``?on_conflict=update`` to re-tag existing items. An empty list removes the vocabulary.
    """
    if isinstance(body, list) and len(body) > MAX_VOCABULARY_ENTRIES:
        raise Invalid(f"at most {MAX_VOCABULARY_ENTRIES} vocabulary entries")
    return replace_vocabulary(session, principal.tenant_id, body)


@router.get("/vocabulary", response_model=Vocabulary)
def get_vocabulary(principal: ReaderDep, session: SessionDep) -> Vocabulary:
    return read_vocabulary(session, principal.tenant_id)
