"""Errors the gateway's domain modules raise, named by what went wrong.

Each is an ``ApiError`` whose HTTP status is set here, once, so the one error handler
(shared/http.py ``install_error_handlers``) answers every one in the usual
``{"error": {"code", "message", "details"}}`` shape, and domain code never picks a status code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.http import ApiError


class DomainError(ApiError):
    STATUS: ClassVar[int] = 400

    def __init__(self, message: str, *, code: str | None = None, details: Any = None):
        super().__init__(self.STATUS, message, code=code, details=details)


class Invalid(DomainError):
    """Well-formed, but the domain cannot accept it."""

    STATUS = 422


class NotFound(DomainError):
    STATUS = 404


class Forbidden(DomainError):
    STATUS = 403


class Conflict(DomainError):
    """Clashes with the current state: a duplicate, a concurrent change, not ready yet."""

    STATUS = 409


class TooLarge(DomainError):
    STATUS = 413


class UnsupportedMedia(DomainError):
    STATUS = 415
