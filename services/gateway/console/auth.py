"""Signing in: an API key typed into a form, kept in an HttpOnly, SameSite=Strict cookie.

The key is checked with ``shared.auth.lookup_key``, the function the API's own authentication
uses; pages then call the API with it, so a key revoked later stops working in the console too
(the API answers 401 and the console asks to sign in again). The cookie holds the key itself:
it is the credential the API already takes, and script on the page can never read it.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.console.templating import page
from shared.auth import lookup_key
from shared.http import ApiError

COOKIE = "atelier_console_key"
COOKIE_PATH = "/console"
MAX_KEY_CHARS = 200

router = APIRouter(prefix="/console", include_in_schema=False)


class LoginRequired(Exception):
    """No key, or one the API no longer takes: back to the sign-in form."""

    def __init__(self, next_path: str = "/console/content"):
        super().__init__(next_path)
        self.next_path = next_path


async def login_redirect(request: Request, exc: LoginRequired) -> Response:
    target = f"/console/login?next={quote(exc.next_path, safe='/')}"
    if request.method != "GET" or request.url.path.startswith("/console/api/"):
        # Scripts get a status they can act on rather than a login page to parse.
        return Response(status_code=401, headers={"X-Console-Login": target})
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


def same_origin(request: Request) -> None:
    """Refuse a state-changing request another site's page started (besides SameSite)."""
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise ApiError(403, "cross-origin requests are not accepted by the console")


def console_key(request: Request) -> str:
    key = request.cookies.get(COOKIE)
    if not key:
        raise LoginRequired(_local_path(request.url.path))
    return key


ConsoleKey = Annotated[str, Depends(console_key)]


def _local_path(path: str | None) -> str:
    """Only console paths: a ``next`` elsewhere would make the form an open redirect."""
    parts = urlsplit(path or "")
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/"):
        return "/console/content"
    if parts.path.startswith(("/console/api/", "/console/static/", "/console/login")):
        return "/console/content"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _key_valid(maker: sessionmaker[Session], key: str) -> bool:
    with maker() as session:
        return lookup_key(session, plaintext=key) is not None


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/console/content") -> Response:
    return page(request, "login.html", next=_local_path(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=MAX_KEY_CHARS)],
    next: Annotated[str, Form(max_length=2000)] = "/console/content",
) -> Response:
    same_origin(request)
    key = api_key.strip()
    target = _local_path(next)
    if not key or not await run_in_threadpool(_key_valid, request.app.state.sessionmaker, key):
        return page(
            request, "login.html", status_code=401, next=target, error="That key is not valid."
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    same_origin(request)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


@router.get("")
@router.get("/")
def home() -> Response:
    return RedirectResponse("/console/content", status_code=303)
