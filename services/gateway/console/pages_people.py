"""A user's recommendations with their reasons, next to that user's history; similar items."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.gateway.console.internal import ApiDep
from services.gateway.console.templating import page

router = APIRouter(prefix="/console", include_in_schema=False)

UserId = Annotated[str | None, Query(max_length=255)]
Mode = Literal["blend", "cf", "content"]


@router.get("/users", response_class=HTMLResponse)
async def user_page(
    request: Request,
    api: ApiDep,
    user_id: UserId = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    exclude_seen: bool = True,
) -> Response:
    user = (user_id or "").strip()
    recommendations = history = None
    recommendations_error = None
    if user:
        recommendations, recommendations_error = await api.get_or_none(
            f"/v1/users/{_segment(user)}/recommendations",
            limit=limit,
            exclude_seen=str(exclude_seen).lower(),
        )
        history = await api.get(f"/v1/users/{_segment(user)}/interactions", limit=50)
    return page(
        request,
        "users.html",
        user_id=user,
        limit=limit,
        exclude_seen=exclude_seen,
        recommendations=recommendations,
        recommendations_error=recommendations_error,
        history=history,
    )


@router.get("/similar", response_class=HTMLResponse)
async def similar_page(
    request: Request,
    api: ApiDep,
    item_id: UserId = None,
    mode: Mode = "blend",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """Items like one item, from interactions (``cf``), embeddings (``content``) or both."""
    item = (item_id or "").strip()
    similar = similar_error = None
    if item:
        similar, similar_error = await api.get_or_none(
            f"/v1/items/{_segment(item)}/similar", mode=mode, limit=limit
        )
    return page(
        request,
        "similar.html",
        item_id=item,
        mode=mode,
        limit=limit,
        similar=similar,
        similar_error=similar_error,
    )


def _segment(value: str) -> str:
    return quote(value, safe="")
