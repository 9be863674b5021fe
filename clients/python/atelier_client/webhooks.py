"""Checking that a webhook delivery comes from Atelier.

Each delivery carries ``X-Atelier-Signature: sha256=<hex>``, an HMAC-SHA256 keyed with the
webhook's secret (shown once, when the webhook is created) over the raw request body; when the
delivery also has ``X-Atelier-Timestamp`` (Unix seconds), the HMAC is over
``"<timestamp>.<raw body>"`` and an old timestamp is refused, so a captured delivery cannot be
replayed later. Verify against the raw bytes, before parsing: re-serialised JSON would not match.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

SIGNATURE_HEADER = "X-Atelier-Signature"
TIMESTAMP_HEADER = "X-Atelier-Timestamp"
EVENT_HEADER = "X-Atelier-Event"
DELIVERY_HEADER = "X-Atelier-Delivery"
TOLERANCE_S = 300.0
_SCHEME = "sha256="


class InvalidSignature(ValueError):
    pass


def sign(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The signature header's value for ``body`` (and ``timestamp``, when deliveries carry one)."""
    message = body if timestamp is None else timestamp.encode() + b"." + body
    return _SCHEME + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    signature: str | None,
    *,
    timestamp: str | None = None,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when ``signature`` is Atelier's for this raw body (and timestamp, which must then
    be within ``tolerance_s`` of now)."""
    if not signature or not signature.startswith(_SCHEME):
        return False
    if timestamp is not None:
        try:
            age = abs((time.time() if now is None else now) - float(timestamp))
        except ValueError:
            return False
        if age > tolerance_s:
            return False
    expected = sign(secret, body, timestamp)
    return hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace"))


def parse_delivery(
    secret: str, body: bytes, headers: Mapping[str, str], *, tolerance_s: float = TOLERANCE_S
) -> dict[str, Any]:
    """The verified payload ``{"event": "job.finished", "job": {...}}`` with the delivery id
    under ``"delivery"`` (deduplicate by it: deliveries are at least once)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ok = verify_signature(
        secret,
        body,
        lower.get(SIGNATURE_HEADER.lower()),
        timestamp=lower.get(TIMESTAMP_HEADER.lower()),
        tolerance_s=tolerance_s,
    )
    if not ok:
        raise InvalidSignature("the webhook signature is missing, does not match, or is too old")
    payload: dict[str, Any] = json.loads(body)
    payload["delivery"] = lower.get(DELIVERY_HEADER.lower())
    return payload
