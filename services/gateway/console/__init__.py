"""The web console at ``/console``: server-rendered pages over the public API.

Pages are Jinja2 templates filled from the gateway's own ``/v1`` API, called in-process with the
signed-in API key (``internal.py``), so the console obeys exactly the rules, scopes and rate
limits any API client does. The browser's few scripts (``static/console.js``) call the same API
through ``/console/api/...``, which adds the key from the HttpOnly cookie. docs/console.md says
more.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.gateway.console import auth, pages_content, pages_models, pages_people, proxy
from services.gateway.console.auth import LoginRequired, login_redirect
from services.gateway.console.internal import ApiFailure, api_failure_page

STATIC_DIR = Path(__file__).parent / "static"


def install_console(app: FastAPI) -> None:
    app.add_exception_handler(LoginRequired, login_redirect)  # type: ignore[arg-type]
    app.add_exception_handler(ApiFailure, api_failure_page)  # type: ignore[arg-type]
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    for module in (auth, proxy, pages_content, pages_models, pages_people):
        app.include_router(module.router)
