from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared.schemas import UTCDateTime


class JobPublic(BaseModel):
    id: str
    type: str
    status: str
    progress: float
    error: str | None
    result: dict[str, Any] | None
    params: dict[str, Any]
    content_id: str | None
    attempts: int
    cancel_requested: bool
    created_at: UTCDateTime
    started_at: UTCDateTime | None
    finished_at: UTCDateTime | None
