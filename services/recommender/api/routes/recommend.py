"""Internal endpoints the gateway forwards to.

There is no API-key check here: the gateway authenticates the caller and passes the tenant id in
``X-Atelier-Tenant``, and signs the call with the secret both share (shared/internal_auth.py);
anything unsigned, altered or older than the replay window is a 401. Keep the recommender on
loopback or a private network all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter

from services.recommender.candidates import Query as RecoQuery
from services.recommender.recommendations import Recommendations
from services.recommender.store import ModelStore
from shared import internal_auth
from shared.config import RecommenderSettings
from shared.http import ApiError
from shared.schemas.recommendations import TENANT_HEADER, RecommendationList

router = APIRouter(prefix="/internal/v1", tags=["recommend"])


async def get_tenant(
    request: Request, tenant: Annotated[str | None, Header(alias=TENANT_HEADER)] = None
) -> str:
    if not tenant:
        raise ApiError(401, f"missing {TENANT_HEADER} header (set by the gateway)")
    settings: RecommenderSettings = request.app.state.settings
    scope = request.scope
    # The path as it came on the wire (percent-escapes intact), as the gateway signed it.
    raw_path = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
    query = scope.get("query_string", b"")
    target = (raw_path + b"?" + query if query else raw_path).decode("latin-1")
    problem = internal_auth.verify(
        settings.internal_secret.get_secret_value(),
        method=request.method,
        target=target,
        tenant=tenant,
        body=await request.body(),
        timestamp=request.headers.get(internal_auth.TIMESTAMP_HEADER),
        signature=request.headers.get(internal_auth.SIGNATURE_HEADER),
        window_s=settings.internal_auth_window_s,
    )
    if problem:
        raise ApiError(401, f"unauthenticated internal call: {problem}")
    # For the access log line, written by the middleware once the response is sent.
    request.state.tenant_id = tenant
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]


async def reco_query(
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    exclude_seen: bool = True,
    tag: Annotated[list[str] | None, Query(description="item must carry every tag")] = None,
    kind: Annotated[list[str] | None, Query(description="image, text, generated, item")] = None,
    metadata: Annotated[
        list[str] | None, Query(description="`field=value`; all must match", max_length=20)
    ] = None,
    exclude: Annotated[list[str] | None, Query(description="item ids to leave out")] = None,
    diversity: Annotated[float, Query(ge=0.0, le=1.0, description="0 = pure relevance")] = 0.0,
    seed_items: Annotated[
        list[str] | None, Query(description="session items for users without history")
    ] = None,
    mode: Annotated[str, Query(pattern="^(cf|content|blend)$")] = "blend",
) -> RecoQuery:
    pairs = []
    for m in metadata or []:
        key, sep, value = m.partition("=")
        if not sep or not key:
            raise ApiError(422, f"metadata filter {m!r} must look like field=value")
        pairs.append((key, value))
    return RecoQuery(
        limit=limit,
        exclude_seen=exclude_seen,
        tags=tuple(tag or ()),
        kinds=tuple(kind or ()),
        metadata=tuple(pairs),
        exclude=tuple(exclude or ()),
        diversity=diversity,
        seed_items=tuple(seed_items or ())[:100],
        mode=mode,
    )


QueryDep = Annotated[RecoQuery, Depends(reco_query)]


JSON = "application/json"
_encoder = TypeAdapter(RecommendationList)


def _answer(
    request: Request, tenant_id: str, ask: Callable[[Recommendations], RecommendationList]
) -> bytes:
    """One request's whole blocking part: session, tenant state, SQL, scoring, JSON bytes."""
    store: ModelStore = request.app.state.models
    with request.app.state.sessionmaker() as session:
        result = ask(Recommendations(session, tenant_id, store.state(session, tenant_id)))
    return _encoder.dump_json(result)


# The dependencies above are `async def` (header and query parsing only) and the handler hands
# the SQL and numpy part to the thread pool in one piece: FastAPI would otherwise give every sync
# dependency, the session generator and the handler a thread-pool hop of their own, and
# validate the returned model against `response_model` once more before encoding it.
@router.get("/users/{user_id}/recommendations", response_model=RecommendationList)
async def user_recommendations(
    user_id: str, request: Request, tenant_id: TenantDep, q: QueryDep
) -> Response:
    body = await run_in_threadpool(_answer, request, tenant_id, lambda r: r.for_user(user_id, q))
    return Response(body, media_type=JSON)


@router.get("/items/{item_id}/similar", response_model=RecommendationList)
async def similar_items(
    item_id: str, request: Request, tenant_id: TenantDep, q: QueryDep
) -> Response:
    body = await run_in_threadpool(_answer, request, tenant_id, lambda r: r.similar(item_id, q))
    return Response(body, media_type=JSON)
