"""The console's Jinja2 environment and the page response every route returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from services.gateway.console.views import image_url, thumbnail_url

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

# The navigation, in order: (path, label).
NAV = (
    ("/console/content", "Content"),
    ("/console/jobs", "Jobs"),
    ("/console/models", "Models"),
    ("/console/users", "Users"),
    ("/console/similar", "Similar"),
    ("/console/playground", "Playground"),
    ("/console/evaluation", "Evaluation"),
)


def percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.0f}%"


templates.env.filters["percent"] = percent
templates.env.globals.update(thumbnail_url=thumbnail_url, image_url=image_url)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A full page (or a fragment: templates starting with ``_``), never cached: every page
    shows one tenant's data."""
    response = templates.TemplateResponse(
        request,
        template,
        {"nav": NAV, "path": request.url.path, **context},
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"
    return response
