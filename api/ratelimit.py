"""A per-identity rate limit in Redis: GCRA (generic cell rate algorithm) in one Lua script.

GCRA keeps one number per identity, the theoretical arrival time (TAT) of the next request, so the
limit is smooth (no fixed-window bursts at window edges) and costs one round trip. The script uses
Redis's own clock, so several gateway replicas share one limit without clock skew.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.metrics import RATE_LIMITED, UPSTREAM_ERRORS

log = logging.getLogger("fdl.gateway")

# KEYS[1] the identity's TAT key; ARGV[1] emission interval (s); ARGV[2] burst (requests).
# Returns {allowed (0|1), seconds until the next request would be allowed (string)}.
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then
  return {0, tostring(allow_at - now)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, '0'}
"""

KEY = "fdl:ratelimit:{}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0


class RateLimiter:
    def __init__(self, client: aioredis.Redis, per_minute: int, burst: int) -> None:
        self.client = client
        self.per_minute = per_minute
        self.burst = burst
        self._script = client.register_script(_GCRA)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def check(self, identity: str) -> Decision:
        """``identity`` must already be a digest or an address, never a raw key."""
        if not self.enabled:
            return Decision(True)
        interval = 60.0 / self.per_minute
        try:
            allowed, wait = await self._script(
                keys=[KEY.format(identity)], args=[repr(interval), self.burst]
            )
        except RedisError as error:
            # Fail open: a Redis hiccup must not take classification down with it.
            UPSTREAM_ERRORS.labels("ratelimit", type(error).__name__).inc()
            log.warning("rate limit check failed, allowing: %s", type(error).__name__)
            return Decision(True)
        if int(allowed):
            return Decision(True)
        RATE_LIMITED.inc()
        return Decision(False, max(1, math.ceil(float(wait))))
