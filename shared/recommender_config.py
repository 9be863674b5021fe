"""A tenant's recommender config, read by the gateway, the trainer and the service alike.

Only SQLAlchemy here: the gateway imports this without the recommender's numeric stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from shared.db.models import RecommenderConfig
from shared.schemas.recommendations import DEFAULT_EVENT_WEIGHTS


@dataclass(frozen=True)
class TenantConfig:
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    half_life_days: float | None = None
    trending_half_life_days: float = 7.0


def get_config(session: Session, *, tenant_id: str) -> TenantConfig:
    row = session.get(RecommenderConfig, tenant_id)
    if row is None:
        return TenantConfig()
    return TenantConfig(
        event_weights={**DEFAULT_EVENT_WEIGHTS, **(row.event_weights or {})},
        half_life_days=row.half_life_days,
        trending_half_life_days=row.trending_half_life_days,
    )


def put_config(
    session: Session,
    *,
    tenant_id: str,
    event_weights: dict[str, float],
    half_life_days: float | None,
    trending_half_life_days: float,
) -> TenantConfig:
    row = session.get(RecommenderConfig, tenant_id)
    if row is None:
        row = RecommenderConfig(tenant_id=tenant_id)
        session.add(row)
    row.event_weights = dict(event_weights)
    row.half_life_days = half_life_days
    row.trending_half_life_days = trending_half_life_days
    session.commit()
    return get_config(session, tenant_id=tenant_id)
