"""One request builder per route, shared by the sync and the async client."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from atelier_client._http import Call, as_list, drop_none, seg
from atelier_client.files import FileInput, file_part


def upload(
    file: FileInput | None,
    *,
    text: str | None,
    title: str | None,
    external_id: str | None,
    metadata: Mapping[str, Any] | None,
    on_conflict: str,
) -> Call:
    params = {"on_conflict": on_conflict}
    if file is None:
        body = drop_none(text=text, title=title, external_id=external_id)
        body["metadata"] = dict(metadata or {})
        return Call("POST", "/v1/content", params=params, json=body)
    fields = drop_none(text=text, title=title, external_id=external_id)
    if metadata is not None:
        fields["metadata"] = json.dumps(dict(metadata))
    return Call(
        "POST", "/v1/content", params=params, data=fields, files=[("file", file_part(file))]
    )


def upload_batch(items: Sequence[Mapping[str, Any]]) -> Call:
    """Items are ``{"file"?, "text"?, "title"?, "external_id"?, "metadata"?}``; either every
    item has a file (multipart) or none does (JSON)."""
    with_file = [i for i in items if i.get("file") is not None]
    if not with_file:
        return Call("POST", "/v1/content:batch", json={"items": [dict(i) for i in items]})
    if len(with_file) != len(items):
        raise ValueError("a batch is either all files or all text; split it")
    per_file = [{k: v for k, v in i.items() if k != "file" and v is not None} for i in items]
    return Call(
        "POST",
        "/v1/content:batch",
        data={"items": json.dumps(per_file)},
        files=[("file", file_part(i["file"])) for i in items],
    )


def content_get(content_id: str, min_score: float, limit: int | None, level: str | None) -> Call:
    params = {"min_score": min_score, "limit": limit, "level": level}
    return Call("GET", f"/v1/content/{seg(content_id)}", params=params)


def content_list(
    *,
    limit: int,
    cursor: str | None,
    kind: str | None,
    tag: str | None,
    min_score: float,
    level: str | None,
) -> Call:
    params = {
        "limit": limit,
        "cursor": cursor,
        "kind": kind,
        "tag": tag,
        "min_score": min_score,
        "level": level,
    }
    return Call("GET", "/v1/content", params=params)


def content_delete(content_id: str) -> Call:
    return Call("DELETE", f"/v1/content/{seg(content_id)}", expect="none")


def asset(content_id: str, role: str) -> Call:
    return Call("GET", f"/v1/content/{seg(content_id)}/assets/{seg(role)}", expect="bytes")


def similar_content(content_id: str, space: str, limit: int) -> Call:
    params = {"space": space, "limit": limit}
    return Call("GET", f"/v1/content/{seg(content_id)}/similar", params=params)


def tags_add(content_id: str, tags: Iterable[str | Mapping[str, Any]]) -> Call:
    body = [{"name": t} if isinstance(t, str) else dict(t) for t in tags]
    return Call("POST", f"/v1/content/{seg(content_id)}/tags", json={"tags": body})


def tag_action(content_id: str, name: str, action: str) -> Call:
    return Call("POST", f"/v1/content/{seg(content_id)}/tags/{seg(name)}:{action}")


def tag_delete(content_id: str, name: str) -> Call:
    return Call("DELETE", f"/v1/content/{seg(content_id)}/tags/{seg(name)}", expect="none")


def vocabulary_put(
    entries: Sequence[Mapping[str, Any]], facets: Sequence[Mapping[str, Any]] | None
) -> Call:
    body = {"entries": [dict(e) for e in entries], "facets": [dict(f) for f in facets or []]}
    return Call("PUT", "/v1/vocabulary", json=body)


def tagger_create(name: str, kind: str, labels: Sequence[str], mode: str | None) -> Call:
    body = drop_none(name=name, kind=kind, labels=list(labels), mode=mode)
    return Call("POST", "/v1/taggers", json=body)


def tagger_examples(
    tagger_id: str, examples: Iterable[Mapping[str, str] | tuple[str, str]]
) -> Call:
    body = [
        dict(e) if isinstance(e, Mapping) else {"content_id": e[0], "label": e[1]} for e in examples
    ]
    return Call("POST", f"/v1/taggers/{seg(tagger_id)}/examples", json={"examples": body})


def model_activate(name: str, version: str) -> Call:
    return Call("POST", f"/v1/models/{seg(name)}/versions/{seg(version)}:activate")


def recommender_config_put(
    event_weights: Mapping[str, float] | None,
    half_life_days: float | None,
    trending_half_life_days: float | None,
) -> Call:
    body = drop_none(
        event_weights=dict(event_weights) if event_weights is not None else None,
        half_life_days=half_life_days,
        trending_half_life_days=trending_half_life_days,
    )
    return Call("PUT", "/v1/recommender/config", json=body)


def recommender_train(budget_s: float | None, candidates: Sequence[str] | None) -> Call:
    body = drop_none(budget_s=budget_s, candidates=list(candidates) if candidates else None)
    return Call("POST", "/v1/recommender/train", json=body)


def recommendations(user_id: str, filters: dict[str, Any]) -> Call:
    return Call("GET", f"/v1/users/{seg(user_id)}/recommendations", params=_filters(filters))


def similar_items(item_id: str, filters: dict[str, Any]) -> Call:
    return Call("GET", f"/v1/items/{seg(item_id)}/similar", params=_filters(filters))


def _filters(filters: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None:
            continue
        if key == "metadata" and isinstance(value, Mapping):
            out[key] = [f"{k}={v}" for k, v in value.items()]
        elif key in ("exclude", "seed_items", "tag", "kind", "metadata"):
            out[key] = as_list(value)
        elif isinstance(value, bool):
            out[key] = str(value).lower()
        else:
            out[key] = value
    return out


def generate(path: str, body: dict[str, Any], wait: float | None) -> Call:
    return Call("POST", path, params={"wait": wait}, json=drop_none(**body))
