"""Request rate limits per API key and per tenant: token buckets in Redis.

Every gateway process shares the buckets, so the limits hold for the whole deployment. One Lua
script checks both buckets and takes a token from each only when both have one (atomic, one
round trip, Redis's clock). When Redis cannot be reached the limiter lets requests through and
says so in the log, at most once per ``retry_s``: an outage of the limiter must not take the
API down with it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

# KEYS: the key's bucket, the tenant's bucket. ARGV: rate and burst of each (rate 0: no limit).
# A bucket is a hash {tokens, at}; at is Redis time in microseconds. Returns {allowed, wait_ms,
# which bucket refused (1 or 2)}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = {}
local wait, refused = 0, 0
for i = 1, 2 do
  local rate, burst = tonumber(ARGV[i * 2 - 1]), tonumber(ARGV[i * 2])
  if rate > 0 then
    local b = redis.call('HMGET', KEYS[i], 'tokens', 'at')
    local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000000)
    state[i] = tokens
    if tokens < 1 then
      local w = math.ceil((1 - tokens) * 1000 / rate)
      if w > wait then wait, refused = w, i end
    end
  end
end
if refused > 0 then return {0, wait, refused} end
for i = 1, 2 do
  if state[i] then
    local rate, burst = tonumber(ARGV[i * 2 - 1]), tonumber(ARGV[i * 2])
    redis.call('HSET', KEYS[i], 'tokens', tostring(state[i] - 1), 'at', tostring(now))
    redis.call('PEXPIRE', KEYS[i], math.ceil(burst * 1000 / rate) + 1000)
  end
end
return {1, 0, 0}
"""


@dataclass(frozen=True)
class Refusal:
    retry_after_s: int
    scope: str  # "api key" or "tenant"


class RateLimiter:
    def __init__(
        self,
        redis_url: str,
        *,
        key_rps: float,
        key_burst: int,
        tenant_rps: float,
        tenant_burst: int,
        timeout_s: float = 0.25,
        retry_s: float = 5.0,
    ):
        self.key_rps, self.key_burst = key_rps, key_burst
        self.tenant_rps, self.tenant_burst = tenant_rps, tenant_burst
        self.enabled = key_rps > 0 or tenant_rps > 0
        # A short timeout of its own: a stalled Redis costs each request this much at most, and
        # only until the first failure opens the circuit for retry_s.
        self._redis = aioredis.Redis.from_url(
            redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        self._script = self._redis.register_script(_SCRIPT)
        self._retry_s = retry_s
        self._skip_until = 0.0

    async def check(self, *, key_id: str, tenant_id: str) -> Refusal | None:
        """None when the request may go on; a refusal with the seconds to wait otherwise."""
        if not self.enabled or time.monotonic() < self._skip_until:
            return None
        try:
            allowed, wait_ms, refused = await self._script(
                keys=[f"atelier:ratelimit:key:{key_id}", f"atelier:ratelimit:tenant:{tenant_id}"],
                args=[self.key_rps, self.key_burst, self.tenant_rps, self.tenant_burst],
            )
        except Exception as exc:  # whatever breaks the limiter must not break the API
            self._skip_until = time.monotonic() + self._retry_s
            log.warning(
                "rate limiter unavailable, requests pass unlimited for %.0f s: %s",
                self._retry_s,
                exc,
            )
            return None
        if allowed:
            return None
        return Refusal(
            retry_after_s=max(1, math.ceil(int(wait_ms) / 1000)),
            scope="api key" if int(refused) == 1 else "tenant",
        )

    async def close(self) -> None:
        await self._redis.aclose()
