"""The public API, called in-process with the signed-in key: what every page reads from.

Going through ``/v1`` rather than the domain functions keeps one set of rules: the console
sees what the key may see, is rate limited as the key is, and an API change shows up here as
the same JSON any client gets.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from fastapi.responses import Response

from services.gateway.console.auth import ConsoleKey, LoginRequired
from services.gateway.console.templating import page
from shared.logging_setup import REQUEST_ID_HEADER

INTERNAL_BASE = "http://gateway.internal"
TIMEOUT_S = 60.0


class ApiFailure(Exception):
    """The API refused or failed a request a page needed as a whole."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("message", "request failed"))
        return f"the API answered {self.status}"

    @property
    def code(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("code", "error"))
        return "error"


async def api_failure_page(request: Request, exc: ApiFailure) -> Response:
    # The API's 4xx is the caller's (a bad filter, an unknown id); its 5xx becomes a 502 here.
    status = exc.status if exc.status < 500 else 502
    return page(request, "error.html", status_code=status, failure=exc)


class Api:
    def __init__(self, request: Request, key: str):
        self._request = request
        self._headers = {"Authorization": f"Bearer {key}"}
        request_id = request.headers.get(REQUEST_ID_HEADER)
        if request_id:
            self._headers[REQUEST_ID_HEADER] = request_id

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | list[tuple[str, str]] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Any answer but 401: a revoked key sends the person back to the sign-in form."""
        pairs = params.items() if isinstance(params, dict) else params or []
        query = httpx.QueryParams([(k, str(v)) for k, v in pairs if v not in (None, "")])
        transport = httpx.ASGITransport(app=self._request.app)
        async with httpx.AsyncClient(
            transport=transport, base_url=INTERNAL_BASE, timeout=TIMEOUT_S
        ) as client:
            response = await client.request(
                method,
                path,
                params=query,
                json=json,
                content=content,
                headers={**self._headers, **(headers or {})},
            )
        if response.status_code == 401:
            raise LoginRequired(self._request.url.path)
        return response

    async def get(self, path: str, **params: Any) -> Any:
        """The JSON body, or ``ApiFailure`` for any error status."""
        response = await self.call("GET", path, params=params)
        return _json_or_fail(response)

    async def get_or_none(self, path: str, **params: Any) -> tuple[Any, ApiFailure | None]:
        """For a section of a page that may be missing (no model trained yet)."""
        try:
            return await self.get(path, **params), None
        except ApiFailure as exc:
            return None, exc


def _json_or_fail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        raise ApiFailure(response.status_code, body)
    return body


def get_api(request: Request, key: ConsoleKey) -> Api:
    return Api(request, key)


ApiDep = Annotated[Api, Depends(get_api)]
