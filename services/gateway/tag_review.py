"""Tag review: people add, accept, reject and remove tags on their content.

A person's decision outlives re-tagging: an accepted or manual tag stays, a rejected one is kept
(hidden) so that re-tagging never adds it again, and all three are examples for tenant taggers.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.gateway import crud
from services.gateway.errors import Invalid, NotFound
from shared.db.models import Tag, TagOrigin
from shared.schemas.content import ContentPublic, TagsCreate
from shared.schemas.tagging import normalise_tag


def _content_tags(session: Session, tenant_id: str, content_id: str, name: str) -> list[Tag]:
    return list(
        session.scalars(
            select(Tag).where(
                Tag.tenant_id == tenant_id, Tag.content_id == content_id, Tag.name == name
            )
        ).all()
    )


def _reloaded(session: Session, tenant_id: str, content_id: str) -> ContentPublic:
    session.expire_all()
    return crud.content_public(
        crud.get_content(session, tenant_id=tenant_id, content_id=content_id)
    )


def add_manual_tags(
    session: Session, *, tenant_id: str, content_id: str, body: TagsCreate
) -> ContentPublic:
    """Each name once, at its highest score; a manual tag replaces a rejection of its name."""
    item = crud.get_content(session, tenant_id=tenant_id, content_id=content_id)
    wanted: dict[str, float] = {}
    for t in body.tags:
        name = normalise_tag(t.name)
        if not name:
            raise Invalid("tag names must not be blank")
        wanted[name] = max(wanted.get(name, 0.0), t.score)
    for name, score in wanted.items():
        rows = _content_tags(session, tenant_id, item.id, name)
        for row in rows:
            if row.origin == TagOrigin.rejected:
                session.delete(row)
        manual = next((r for r in rows if r.source == "manual"), None)
        if manual is not None:
            manual.origin = TagOrigin.manual
            manual.score = score
        else:
            session.add(
                Tag(
                    tenant_id=tenant_id,
                    content_id=item.id,
                    name=name,
                    score=score,
                    source="manual",
                    origin=TagOrigin.manual,
                )
            )
    session.commit()
    return _reloaded(session, tenant_id, item.id)


def review_tag(
    session: Session, *, tenant_id: str, content_id: str, name: str, accept: bool
) -> ContentPublic:
    """Accept (automatic -> accepted) or reject (any -> rejected) every row of a tag name.

    Repeating a decision is not an error; deciding on a name the item never had is.
    """
    item = crud.get_content(session, tenant_id=tenant_id, content_id=content_id)
    name = normalise_tag(name)
    rows = _content_tags(session, tenant_id, item.id, name)
    if accept:
        targets = [r for r in rows if r.origin == TagOrigin.auto]
        if not targets and not any(r.origin == TagOrigin.accepted for r in rows):
            raise NotFound(f"content {content_id} has no automatic tag {name!r} to accept")
        for r in targets:
            r.origin = TagOrigin.accepted
    else:
        targets = [r for r in rows if r.origin != TagOrigin.rejected]
        if not targets and not rows:
            raise NotFound(f"content {content_id} has no tag {name!r} to reject")
        for r in targets:
            r.origin = TagOrigin.rejected
    session.commit()
    return _reloaded(session, tenant_id, item.id)


def delete_manual_tag(session: Session, *, tenant_id: str, content_id: str, name: str) -> None:
    """Only manual tags are deleted: an automatic one would come back on re-tagging."""
    item = crud.get_content(session, tenant_id=tenant_id, content_id=content_id)
    res = session.execute(
        delete(Tag).where(
            Tag.content_id == item.id,
            Tag.name == normalise_tag(name),
            Tag.origin == TagOrigin.manual,
        )
    )
    if res.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(
            f"content {content_id} has no manual tag {name!r}; reject automatic tags with "
            f"POST /v1/content/{content_id}/tags/{{name}}:reject",
        )
    session.commit()
