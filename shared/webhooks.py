"""Webhook rules both sides need: where a webhook may point, and how a delivery is signed.

Targets: a tenant names the URL, and the workers POST to it from inside the deployment, so a
URL that resolves to loopback, a private or link-local network, multicast, a reserved range or a
cloud metadata endpoint would let a tenant reach internal services (SSRF). The gateway refuses
such URLs at registration; the worker resolves the name again at each delivery, refuses if any
address is not public, and connects to the address it checked (no second lookup to rebind).
``webhook_allow_private_targets`` lifts the rule for tests and closed networks.

Signatures: ``X-Atelier-Timestamp: <Unix seconds>`` and ``X-Atelier-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" with the webhook's secret>``; receivers
check both with :func:`verify_signature`, which also refuses old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from urllib.parse import urlsplit

TIMESTAMP_HEADER = "X-Atelier-Timestamp"
SIGNATURE_HEADER = "X-Atelier-Signature"
# Cloud metadata services; the IPv4 one is link-local and the AWS IPv6 one unique-local anyway,
# named here so the refusal says what they are.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The webhook URL points somewhere deliveries must not go; the message says why."""


def address_problem(ip: IPAddress) -> str | None:
    """Why a delivery must not go to ``ip``, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} (cloud metadata address)"
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return f"{ip} ({kind} address)"
    if not ip.is_global:
        return f"{ip} (not a public address)"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Scope ids (fe80::1%eth0) are not part of the address.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def split_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"{url!r} is not an http(s) URL with a host")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def checked_addresses(url: str, *, allow_private: bool) -> list[IPAddress]:
    """The addresses of ``url``'s host, all public unless ``allow_private``.

    Raises :class:`TargetRefused` naming the first refused address, and ``OSError`` when the
    name does not resolve.
    """
    host, port = split_target(url)
    addresses = resolve(host, port)
    if not allow_private:
        for ip in addresses:
            if problem := address_problem(ip):
                raise TargetRefused(
                    f"webhook host {host!r} resolves to {problem}; deliveries go to public "
                    "addresses only (ATELIER_WEBHOOK_ALLOW_PRIVATE_TARGETS lifts this)"
                )
    return addresses


def registration_problem(url: str, *, allow_private: bool) -> str | None:
    """Why a webhook must not be registered with ``url``, or None.

    A name that does not resolve yet is accepted: every delivery checks again.
    """
    try:
        checked_addresses(url, allow_private=allow_private)
    except TargetRefused as exc:
        return str(exc)
    except (OSError, UnicodeError):
        return None
    return None


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The timestamp and signature headers of one delivery of ``body``."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify_signature(
    secret: str,
    body: bytes,
    *,
    timestamp: str | None,
    signature_header: str | None,
    window_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when a delivery is authentic and its timestamp within ``window_s`` of ``now``: for
    receivers (and tests), with the raw body exactly as received."""
    if not timestamp or not signature_header:
        return False
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > window_s:
        return False
    expected = signature(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature_header.encode("utf-8", "replace"))
