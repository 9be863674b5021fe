"""``/console/api/...``: the browser's scripts reach ``/v1/...`` here, with the cookie's key.

Nothing is decided here: the request goes to the API as it came (method, query, body, content
type) plus the key, and the API's answer comes back as it went. State-changing methods must
carry ``X-Atelier-Console`` (a header another site's form or image cannot send) and come from
this origin, on top of the SameSite=Strict cookie.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.gateway.console.auth import ConsoleKey, same_origin
from services.gateway.console.internal import Api
from shared.http import ApiError

router = APIRouter(prefix="/console/api", include_in_schema=False)

SCRIPT_HEADER = "X-Atelier-Console"
FORWARDED_REQUEST_HEADERS = ("content-type", "accept")
FORWARDED_RESPONSE_HEADERS = ("content-type", "x-content-type-options", "retry-after", "location")


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
async def forward(path: str, request: Request, key: ConsoleKey) -> Response:
    segments = path.split("/")
    if not path or any(s in ("", ".", "..") for s in segments):
        raise ApiError(404, f"no API route /v1/{path}")
    if request.method != "GET":
        same_origin(request)
        if request.headers.get(SCRIPT_HEADER) != "1":
            raise ApiError(403, f"console API calls that change data need {SCRIPT_HEADER}: 1")
    headers = {h: request.headers[h] for h in FORWARDED_REQUEST_HEADERS if h in request.headers}
    answer = await Api(request, key).call(
        request.method,
        f"/v1/{path}",
        params=request.query_params.multi_items(),
        content=await request.body(),
        headers=headers,
    )
    kept = {h: answer.headers[h] for h in FORWARDED_RESPONSE_HEADERS if h in answer.headers}
    return Response(answer.content, status_code=answer.status_code, headers=kept)
