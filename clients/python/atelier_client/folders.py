"""``upload_folder``'s plan, shared by both clients: what to send for each file, and how an
answer (or an error) becomes that file's :class:`UploadResult`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from atelier_client import calls
from atelier_client._http import Call
from atelier_client.errors import AtelierError, Conflict
from atelier_client.files import is_text
from atelier_client.types import Accepted, UploadResult

# skip: a 409 for an existing external_id is a result ("exists"), not a failure.
OnConflict = Literal["skip", "update", "error"]


@dataclass
class UploadPlan:
    path: Path
    rel: str
    external_id: str
    metadata: Mapping[str, Any] | None
    on_conflict: OnConflict
    done: UploadResult | None = None

    def call(self) -> Call:
        server_mode = "update" if self.on_conflict == "update" else "error"
        if is_text(self.path):
            return calls.upload(
                None,
                text=self.path.read_text(encoding="utf-8"),
                title=self.path.stem,
                external_id=self.external_id,
                metadata=self.metadata,
                on_conflict=server_mode,
            )
        return calls.upload(
            self.path,
            text=None,
            title=None,
            external_id=self.external_id,
            metadata=self.metadata,
            on_conflict=server_mode,
        )

    def result(self, answer: Accepted) -> UploadResult:
        return UploadResult(
            path=self.rel,
            external_id=self.external_id,
            status="created" if answer["created"] else "updated",
            id=answer["id"],
            job_id=answer["job_id"],
        )

    def failed(self, exc: Exception) -> UploadResult:
        if isinstance(exc, Conflict) and self.on_conflict == "skip":
            existing = exc.details.get("id") if isinstance(exc.details, dict) else None
            return UploadResult(self.rel, self.external_id, "exists", id=existing)
        code = exc.code if isinstance(exc, AtelierError) else type(exc).__name__
        message = str(exc.message) if isinstance(exc, AtelierError) else str(exc)
        return UploadResult(self.rel, self.external_id, "failed", error=message, error_code=code)


def plan_uploads(
    files: list[tuple[Path, str]],
    existing: Mapping[str, str],
    *,
    prefix: str,
    metadata: Mapping[str, Any] | None,
    on_conflict: OnConflict,
) -> list[UploadPlan]:
    plans = []
    for path, rel in files:
        ext = prefix + rel
        plan = UploadPlan(path, rel, ext, metadata, on_conflict)
        if ext in existing:
            plan.done = UploadResult(rel, ext, "skipped", id=existing[ext])
        plans.append(plan)
    return plans
