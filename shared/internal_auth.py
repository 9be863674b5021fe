"""Signed calls from the gateway to the recommender's internal API: the one rule both sides use.

The recommender trusts the tenant named in ``X-Atelier-Tenant``, so a call is accepted only with
``X-Atelier-Signature: v1=<hex>``, an HMAC-SHA256 with ``internal_secret`` over the method, the
path and query exactly as sent, the tenant header, ``X-Atelier-Timestamp`` (Unix seconds) and
the SHA-256 of the body. A timestamp further than ``window_s`` from the recommender's clock is
refused, so a captured call cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Atelier-Timestamp"
SIGNATURE_HEADER = "X-Atelier-Signature"
_SCHEME = "v1="


def _digest(
    secret: str, *, method: str, target: str, tenant: str, timestamp: str, body: bytes
) -> str:
    message = "\n".join(
        (method.upper(), target, tenant, timestamp, hashlib.sha256(body).hexdigest())
    )
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign(
    secret: str,
    *,
    method: str,
    target: str,
    tenant: str,
    body: bytes = b"",
    now: float | None = None,
) -> dict[str, str]:
    """The headers that authenticate one call; ``target`` is the path with its query string
    (``/internal/v1/...?limit=10``), byte for byte as it goes on the wire."""
    timestamp = str(int(time.time() if now is None else now))
    digest = _digest(
        secret, method=method, target=target, tenant=tenant, timestamp=timestamp, body=body
    )
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: _SCHEME + digest}


def verify(
    secret: str,
    *,
    method: str,
    target: str,
    tenant: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    window_s: float,
    now: float | None = None,
) -> str | None:
    """Why the call is not authentic, or None when it is."""
    if not timestamp or not signature:
        return f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}: internal calls are signed"
    try:
        sent = int(timestamp)
    except ValueError:
        return f"{TIMESTAMP_HEADER} is not a Unix time in seconds"
    if abs((time.time() if now is None else now) - sent) > window_s:
        return f"{TIMESTAMP_HEADER} is outside the {window_s:g} s window (clock skew or replay)"
    expected = _SCHEME + _digest(
        secret, method=method, target=target, tenant=tenant, timestamp=timestamp, body=body
    )
    # compare_digest: the time taken says nothing about how much of a forgery was right.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "the signature does not match (wrong secret, or the call was altered)"
    return None
