"""Limits on hostile input checked before any route parses it: JSON size and depth, NUL in URLs.

``json.loads`` recurses once per nesting level: a body of 5,000 nested objects exhausts the
interpreter's recursion limit (a 500), and a few hundred levels still reach pydantic, the
``jsonb`` encoder and every later reader. :class:`InputLimits` refuses a JSON body over
``max_bytes`` with 413 while it streams in, and one nested deeper than ``max_depth`` with 422,
both before the route sees a byte. Routes that find JSON inside other bodies (multipart fields)
call :func:`json_depth_error` themselves.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http import error_body

# Brackets become one open and one close byte; quotes and brackets are all that is kept.
_DROP_TEXT = bytes(b for b in range(256) if b not in b'[]{}"')
_CLOSE = bytes.maketrans(b"[{]}", b"(())")


def json_depth_error(raw: bytes | str, max_depth: int) -> str | None:
    """Why ``raw`` nests too deeply, or None; no parsing, linear in the size.

    Every pass deletes the innermost bracket pairs (all C-level byte operations), so the
    number of passes until nothing is left is the nesting depth. Malformed JSON is left to
    the parser, which reports it better.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if b"[" not in data and b"{" not in data:
        return None
    # Escaped backslashes, then escaped quotes, go first; the odd pieces between the quotes
    # left are then the strings, whose brackets are text, not structure. Dropping every other
    # byte first makes bracket-free strings `""`, which go in one cheap replace.
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = unescaped.translate(None, _DROP_TEXT).replace(b'""', b"")
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[::2])
    shape = kept.translate(_CLOSE)
    for _ in range(max_depth):
        shorter = shape.replace(b"()", b"")
        if not shorter or shorter == shape:
            return None
        shape = shorter
    return f"the JSON nests deeper than {max_depth} levels"


def loads_limited(raw: bytes | str, max_depth: int) -> Any:
    """``json.loads`` that refuses deep nesting with ValueError before parsing."""
    if msg := json_depth_error(raw, max_depth):
        raise ValueError(msg)
    return json.loads(raw)


def _is_json(headers: dict[bytes, bytes]) -> bool:
    # FastAPI parses a body without content type as JSON, so it is held to the same limits.
    ctype = headers.get(b"content-type")
    if ctype is None:
        return True
    media = ctype.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class InputLimits:
    """ASGI middleware: JSON bodies within ``max_bytes`` and ``max_depth``; no NUL in the URL."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_depth: int):
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await _reject(send, 422, "validation_error", "the URL must not contain NUL (%00)")
            return
        headers = dict(scope.get("headers") or [])
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") or not _is_json(headers):
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(send, 413, "payload_too_large", self._too_large(), close=True)
            return
        # The whole body is needed before its depth is known; it is bounded by max_bytes.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _reject(send, 413, "payload_too_large", self._too_large(), close=True)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if msg := json_depth_error(body, self.max_depth):
            await _reject(send, 422, "validation_error", msg)
            return
        replay: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([replay], receive), send)

    def _too_large(self) -> str:
        return f"a JSON body may have at most {self.max_bytes} bytes"


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _reject(send: Send, status: int, code: str, message: str, *, close: bool = False) -> None:
    body = json.dumps(error_body(code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        # The rest of the body is never read: the connection cannot be reused.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
