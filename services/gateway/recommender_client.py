"""The gateway's client for the recommender's internal API.

aiohttp rather than httpx on this hot path: its pooled loopback GET is several times faster, and
every recommendation request pays it (see docs/perf.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from shared import internal_auth
from shared.http import ApiError
from shared.logging_setup import REQUEST_ID_HEADER, request_id_var
from shared.schemas.recommendations import TENANT_HEADER


class RecommenderClient:
    def __init__(self, base_url: str, *, timeout_s: float, secret: str):
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._secret = secret
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily inside the running event loop: aiohttp sessions are bound to one.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=30),
            )
        return self._session

    async def get(
        self, path: str, *, params: Sequence[tuple[str, str]], headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        """``(status, content type, body)``, signed (shared/internal_auth.py); unreachable ->
        503, too slow -> 504."""
        # The query is encoded here and sent as is (encoded=True), so the signed target is
        # byte for byte what the recommender receives.
        query = urlencode(list(params), quote_via=quote)
        target = f"{path}?{query}" if query else path
        signed = internal_auth.sign(
            self._secret, method="GET", target=target, tenant=headers.get(TENANT_HEADER, "")
        )
        url = URL(self.base_url + target, encoded=True)
        try:
            # The request id ties the recommender's log line to the gateway's.
            request_id = request_id_var.get()
            traced = {REQUEST_ID_HEADER: request_id} if request_id else {}
            async with self._client().get(url, headers={**headers, **signed, **traced}) as r:
                return r.status, r.headers.get("content-type", ""), await r.read()
        except TimeoutError as exc:
            raise ApiError(504, "the recommender service did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ApiError(503, f"the recommender service is unreachable: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            # Let the connector's transports close before the loop goes away.
            await asyncio.sleep(0)
