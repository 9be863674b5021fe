from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


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
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    items: list[JobPublic]
