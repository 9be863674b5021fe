"""A user's interaction history as the API shows it: newest events first, with their items."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import ContentItem, Interaction
from shared.schemas.recommendations import HistoryEvent, UserHistory


def user_history(session: Session, *, tenant_id: str, user_id: str, limit: int) -> UserHistory:
    """An unknown user has an empty history, as the recommender treats one (not a 404)."""
    rows = session.execute(
        select(Interaction, ContentItem)
        .join(ContentItem, ContentItem.id == Interaction.item_id)
        .where(Interaction.tenant_id == tenant_id, Interaction.user_id == user_id)
        .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
        .limit(limit)
    ).all()
    return UserHistory(
        user_id=user_id,
        events=[
            HistoryEvent(
                item_id=item.id,
                external_id=item.external_id,
                title=item.title,
                kind=item.kind,
                event_type=event.event_type,
                value=event.value,
                occurred_at=event.occurred_at,
            )
            for event, item in rows
        ],
    )
