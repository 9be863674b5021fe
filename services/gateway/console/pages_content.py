"""The content browser: thumbnails with their tags, scores and facets, filters, near-duplicates
grouped, tags accepted or rejected in place, uploads by drag and drop; one item's page."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.gateway.console.internal import ApiDep
from services.gateway.console.templating import page
from services.gateway.console.views import (
    KINDS,
    facet_of,
    facet_options,
    group_duplicates,
)

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE_SIZE = 24
ContentId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Kind = Literal["image", "text", "generated", "item"]


@router.get("/content", response_class=HTMLResponse)
async def content_browser(
    request: Request,
    api: ApiDep,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    kind: Kind | None = None,
    facet: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """``facet`` is one facet entry (a tag): with ``tag`` as well, both must be on an item."""
    vocabulary = await api.get("/v1/vocabulary")
    wanted = tag or facet
    listing = await api.get("/v1/content", limit=PAGE_SIZE, cursor=cursor, kind=kind, tag=wanted)
    items = listing["items"]
    if tag and facet:
        items = [i for i in items if any(t["name"] == facet for t in i["tags"])]
    return page(
        request,
        "content.html",
        cards=group_duplicates(items),
        facets=facet_of(vocabulary),
        facet_choices=facet_options(vocabulary),
        kinds=KINDS,
        filters={"tag": tag or "", "kind": kind or "", "facet": facet or ""},
        next_cursor=listing["next_cursor"],
    )


@router.get("/content/{content_id}/card", response_class=HTMLResponse)
async def content_card(request: Request, api: ApiDep, content_id: ContentId) -> Response:
    """One card, as the browser shows it: what the page polls while an upload is tagged."""
    item = await api.get(f"/v1/content/{content_id}")
    vocabulary = await api.get("/v1/vocabulary")
    return page(
        request,
        "_card.html",
        card=group_duplicates([item])[0],
        facets=facet_of(vocabulary),
    )


@router.get("/content/{content_id}", response_class=HTMLResponse)
async def content_item(request: Request, api: ApiDep, content_id: ContentId) -> Response:
    item = await api.get(f"/v1/content/{content_id}")
    vocabulary = await api.get("/v1/vocabulary")
    space = "text" if item["kind"] == "text" else "image"
    similar, similar_error = await api.get_or_none(
        f"/v1/content/{content_id}/similar", space=space, limit=12
    )
    original = None
    if item.get("duplicate_of"):
        original, _ = await api.get_or_none(f"/v1/content/{item['duplicate_of']}")
    return page(
        request,
        "item.html",
        item=item,
        card=group_duplicates([item])[0],
        facets=facet_of(vocabulary),
        similar=similar,
        similar_error=similar_error,
        space=space,
        original=original,
    )
