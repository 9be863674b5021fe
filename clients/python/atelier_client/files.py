"""Local input: files to upload, folders to walk, and interaction events from CSV."""

from __future__ import annotations

import csv
import hashlib
import mimetypes
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atelier_client.types import Event

# What the gateway accepts as images; anything else in a folder is left alone.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})
TEXT_SUFFIXES = frozenset({".txt", ".md"})

FileInput = str | os.PathLike[str] | bytes | tuple[str, bytes]


def file_part(value: FileInput) -> tuple[str, bytes, str]:
    """``(filename, bytes, mime type)``. Read whole so that a retry can send it again."""
    if isinstance(value, bytes):
        name, body = "upload", value
    elif isinstance(value, tuple):
        name, body = value
    else:
        path = Path(value)
        name, body = path.name, path.read_bytes()
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return name, body, mime


def discover(root: str | os.PathLike[str], *, recursive: bool = True) -> list[tuple[Path, str]]:
    """Images and text files under ``root`` as ``(path, relative POSIX path)``, sorted; hidden
    files and folders are skipped."""
    base = Path(root)
    if not base.is_dir():
        raise NotADirectoryError(f"not a folder: {base}")
    found = []
    for path in base.rglob("*") if recursive else base.glob("*"):
        rel = path.relative_to(base)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES | TEXT_SUFFIXES:
            found.append((path, rel.as_posix()))
    return sorted(found, key=lambda pair: pair[1])


def is_text(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES


# Accepted header names for each event field (exports name them differently).
COLUMNS = {
    "user_id": ("user_id", "user", "userid"),
    "item_id": ("item_id", "item", "itemid", "content_id"),
    "event_type": ("event_type", "event", "type"),
    "value": ("value", "rating", "weight"),
    "timestamp": ("timestamp", "ts", "time"),
    "event_id": ("event_id", "id"),
}


class CsvError(ValueError):
    pass


def _columns(header: list[str]) -> dict[str, str]:
    lower = {h.strip().lower(): h for h in header}
    found = {}
    for field, names in COLUMNS.items():
        for name in names:
            if name in lower:
                found[field] = lower[name]
                break
    missing = {"user_id", "item_id"} - set(found)
    if missing:
        raise CsvError(f"the CSV header lacks {sorted(missing)} (it has {header})")
    return found


def _timestamp(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        # Unix seconds, as `atelier reco evaluate` reads them.
        return datetime.fromtimestamp(float(raw), UTC).isoformat()
    except ValueError:
        return raw  # ISO 8601: the server parses and checks it


def read_events(
    path: str | os.PathLike[str], *, default_event_type: str = "view"
) -> Iterator[Event]:
    """The CSV's rows as events, in file order.

    A row without an ``event_id`` gets one derived from its content and how many identical rows
    came before it, so importing the same file again is skipped by the server as duplicates.
    """
    seen: Counter[str] = Counter()
    stem = Path(path).name
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = _columns(list(reader.fieldnames or []))
        for line, row in enumerate(reader, start=2):

            def get(field: str, row: dict[str, Any] = row) -> str:
                col = cols.get(field)
                return (row.get(col) or "").strip() if col else ""

            event: Event = {
                "user_id": get("user_id"),
                "item_id": get("item_id"),
                "event_type": get("event_type") or default_event_type,
            }
            if not event["user_id"] or not event["item_id"]:
                raise CsvError(f"{stem}:{line}: user_id and item_id must not be empty")
            value = get("value")
            if value:
                try:
                    event["value"] = float(value)
                except ValueError as exc:
                    raise CsvError(f"{stem}:{line}: value {value!r} is not a number") from exc
            ts = _timestamp(get("timestamp"))
            if ts is not None:
                event["timestamp"] = ts
            event_id = get("event_id")
            if not event_id:
                key = (
                    "\x1f".join(
                        str(event.get(k, "")) for k in ("user_id", "item_id", "event_type", "value")
                    )
                    + "\x1f"
                    + get("timestamp")
                )
                seen[key] += 1
                digest = hashlib.sha256(f"{key}\x1e{seen[key]}".encode()).hexdigest()[:32]
                event_id = f"csv-{digest}"
            event["event_id"] = event_id
            yield event


def count_rows(path: str | os.PathLike[str]) -> int:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return max(0, sum(1 for _ in csv.reader(fh)) - 1)
