"""The one rule for text in requests: no NUL character and no unpaired UTF-16 surrogate.

PostgreSQL refuses NUL in ``text`` and ``jsonb`` and nothing can encode a lone surrogate as
UTF-8, so either would fail at the database (a 500 after work was done). Every request schema
derives from :class:`RequestModel`, which checks every string of every field, dictionary keys
and nested values included, and answers a 422 naming the field. Hand-written fast paths that
skip pydantic call :func:`text_error` themselves.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


def text_error(s: str) -> str | None:
    """Why ``s`` cannot be stored, or None when it can."""
    if "\x00" in s:
        return "must not contain the NUL character (\\u0000)"
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain unpaired surrogates (\\ud800-\\udfff)"
    return None


def find_text_error(value: Any) -> tuple[list[str | int], str] | None:
    """The path inside ``value`` and the reason of its first unstorable string, if any.

    Walks dictionaries (keys and values), lists and tuples; models are checked by their own
    :class:`RequestModel` validation.
    """
    if isinstance(value, str):
        msg = text_error(value)
        return ([], msg) if msg else None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and (msg := text_error(k)):
                return [k], f"key {msg}"
            if (found := find_text_error(v)) is not None:
                return [k, *found[0]], found[1]
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if (found := find_text_error(v)) is not None:
                return [i, *found[0]], found[1]
    return None


def _printable(part: str | int) -> str:
    # A key that is itself the problem is shown escaped, never raw.
    return ascii(part)[1:-1] if isinstance(part, str) else str(part)


class RequestModel(BaseModel):
    """Base of every request body schema (see the module docstring for the rule)."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any, info: ValidationInfo) -> Any:
        found = find_text_error(value)
        if found is None:
            return value
        path, msg = found
        if path:
            inner = "".join(f"[{_printable(p)}]" for p in path)
            msg = f"{msg}, at {info.field_name}{inner}"
        raise PydanticCustomError("invalid_text", "{reason}", {"reason": msg})
