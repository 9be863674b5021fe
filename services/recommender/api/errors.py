"""The one place the recommender's domain errors become HTTP answers.

Bodies have the shape of every other error (``shared.http.error_body``), so a domain error
answers exactly as an ``ApiError`` with the same status would.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.recommender.errors import ItemNotFound, RecommenderError
from shared.http import STATUS_CODES, error_body

STATUS: dict[type[RecommenderError], int] = {
    ItemNotFound: 404,
}


def status_of(exc: RecommenderError) -> int:
    """The status of the nearest mapped class (a subclass answers as its parent unless mapped)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def install_domain_error_handler(app: FastAPI) -> None:
    @app.exception_handler(RecommenderError)
    async def _domain_error(_: Request, exc: RecommenderError) -> JSONResponse:
        status = status_of(exc)
        return JSONResponse(
            error_body(STATUS_CODES.get(status, "error"), str(exc)), status_code=status
        )
