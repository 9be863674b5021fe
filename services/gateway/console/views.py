"""Shaping the API's JSON for the templates: facets beside tags, near-duplicates grouped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("image", "text", "generated", "item")


@dataclass
class Card:
    item: dict[str, Any]
    duplicates: list[dict[str, Any]] = field(default_factory=list)


def facet_of(vocabulary: dict[str, Any] | None) -> dict[str, str]:
    """Entry name -> its facet, for the entries that belong to one."""
    entries = (vocabulary or {}).get("entries", [])
    return {e["name"]: e["facet"] for e in entries if e.get("facet")}


def facet_options(vocabulary: dict[str, Any] | None) -> list[tuple[str, list[str]]]:
    """(facet, its entries) in the vocabulary's order: the facet filter's choices."""
    by_facet: dict[str, list[str]] = {f["name"]: [] for f in (vocabulary or {}).get("facets", [])}
    for entry, facet in facet_of(vocabulary).items():
        by_facet.setdefault(facet, []).append(entry)
    return [(f, names) for f, names in by_facet.items() if names]


def group_duplicates(items: list[dict[str, Any]]) -> list[Card]:
    """Each near-duplicate under its original when both are on the page; otherwise alone."""
    cards = {i["id"]: Card(i) for i in items}
    out: list[Card] = []
    for item in items:
        original = item.get("duplicate_of")
        if original and original in cards and original != item["id"]:
            cards[original].duplicates.append(item)
        else:
            out.append(cards[item["id"]])
    return out


def thumbnail_url(item: dict[str, Any], role: str = "thumbnail") -> str | None:
    """The asset through the console's API proxy (an ``<img>`` sends the cookie, not a key)."""
    roles = {a["role"] for a in item.get("assets", [])}
    chosen = role if role in roles else next(iter(sorted(roles)), None)
    if chosen is None:
        return None
    return f"/console/api/content/{item['id']}/assets/{chosen}"


def image_url(content_id: str, kind: str) -> str | None:
    """For answers that list ids without assets (similar items, recommendations): uploads have a
    thumbnail, generated images only their small original, text none."""
    role = {"image": "thumbnail", "generated": "original"}.get(kind)
    return f"/console/api/content/{content_id}/assets/{role}" if role else None
