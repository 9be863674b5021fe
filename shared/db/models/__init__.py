"""SQLAlchemy 2.0 typed models: the SQL store is the source of truth for every service.

One module per area; every table is imported here, so ``from shared.db.models import X`` works
for every model and ``Base.metadata`` (Alembic's target) holds every table.
"""

from shared.db.models.base import Base, BigId, JSONType, UTCDateTime, new_id, utcnow
from shared.db.models.content import (
    HUMAN_ORIGINS,
    VISIBLE_ORIGINS,
    Asset,
    ContentItem,
    ContentKind,
    ContentStatus,
    Embedding,
    Tag,
    TagOrigin,
)
from shared.db.models.jobs import Job, JobStatus, ModelVersion
from shared.db.models.recommendations import Interaction, RecommenderConfig
from shared.db.models.tagging import Tagger, TaggerExample, VocabularyEntry, VocabularyFacet
from shared.db.models.tenants import ApiKey, Tenant, Webhook

__all__ = [
    "HUMAN_ORIGINS",
    "VISIBLE_ORIGINS",
    "ApiKey",
    "Asset",
    "Base",
    "BigId",
    "ContentItem",
    "ContentKind",
    "ContentStatus",
    "Embedding",
    "Interaction",
    "JSONType",
    "Job",
    "JobStatus",
    "ModelVersion",
    "RecommenderConfig",
    "Tag",
    "TagOrigin",
    "Tagger",
    "TaggerExample",
    "Tenant",
    "UTCDateTime",
    "VocabularyEntry",
    "VocabularyFacet",
    "Webhook",
    "new_id",
    "utcnow",
]
