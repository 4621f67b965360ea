"""A per-identity rate limit in Redis: GCRA (generic cell rate algorithm) in one Lua script.

GCRA keeps one number per identity, the theoretical arrival time (TAT) of the next request, so the
limit is smooth (no fixed-window bursts at window edges) and costs one round trip. The script uses
Redis's own clock, so several gateway replicas share one limit without clock skew.

Failed authentications have a limit of their own per client address (:class:`FailureLimiter`).
Addresses are counted as :func:`address_bucket` groups them: an IPv6 client by its /64, and every
text that is not an IP address in one shared bucket.

The limiters fail open (:class:`FailOpen`): a check that Redis fails or does not answer within a
short deadline lets the request through, and Redis is then skipped for a few seconds at a time
until it answers again, so a hung Redis costs one short wait per back-off, not the client's socket
timeout per request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache

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


# The longest text of an IPv6 address (45 characters) with room for a zone (``%eth0``).
_MAX_ADDRESS_TEXT = 64
# The one bucket of every client "address" that is not an IP address.
INVALID_ADDRESS = "invalid-address"


@lru_cache(maxsize=4096)
def _bucket(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return INVALID_ADDRESS
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return f"{ipaddress.IPv6Network((address, 64), strict=False).network_address}/64"


def address_bucket(host: str) -> str:
    """What a client address is counted as: an IPv4 address itself, an IPv6 address its /64.

    One IPv6 subscriber or host usually holds a whole /64 and may pick any address in it, so
    per-address buckets would give it 2^64 budgets. An IPv4-mapped IPv6 address is its IPv4.
    Any text that is not an IP address (a trusted proxy's X-Forwarded-For may hold any) is
    :data:`INVALID_ADDRESS`, one bucket for all such texts: a bucket per text would give a client
    behind a trusted proxy a fresh budget per made-up value.
    """
    return INVALID_ADDRESS if len(host) > _MAX_ADDRESS_TEXT else _bucket(host)


class FailOpen:
    """How the limiters of one Redis client fail open: a deadline per check, then a back-off.

    A check that fails, or gets no answer within ``timeout_s``, lets its request through; checks
    then skip Redis (their requests let through) for ``backoff_s``, after which one check tries
    Redis again while the others go on skipping. The outage is logged when it begins and when
    Redis answers again, never per request; each failed Redis call is counted in
    ``fdl_gateway_upstream_errors_total{method="ratelimit"}``.

    A check cut by the deadline leaves the shared client's pool sound: redis-py (8.x) disconnects
    a connection whose command is cancelled while connecting, sending or reading, so a late reply
    is never read as another command's.
    """

    def __init__(self, timeout_s: float, backoff_s: float) -> None:
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._down_since: float | None = None  # time.monotonic() of the outage's first failure
        self._retry_at = 0.0  # Redis is skipped before this time.monotonic()
        self._unchecked = 0  # requests let through unchecked in this outage

    def skip(self) -> bool:
        """Whether to let a request through without asking Redis."""
        if self._down_since is None:
            return False
        now = time.monotonic()
        if now < self._retry_at:
            self._unchecked += 1
            return True
        self._retry_at = now + self.backoff_s  # this check tries Redis; the others skip meanwhile
        return False

    def failed(self, error: Exception) -> None:
        UPSTREAM_ERRORS.labels("ratelimit", type(error).__name__).inc()
        now = time.monotonic()
        self._retry_at = now + self.backoff_s
        self._unchecked += 1
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "rate limit check failed (%s): letting requests through unchecked, trying Redis "
                "again every %.1f s",
                type(error).__name__,
                self.backoff_s,
            )

    def answered(self) -> None:
        if self._down_since is not None:
            log.info(
                "rate limit: Redis answers again after %.1f s; %d requests were let through "
                "unchecked",
                time.monotonic() - self._down_since,
                self._unchecked,
            )
            self._down_since, self._unchecked = None, 0


class RateLimiter:
    def __init__(
        self, client: aioredis.Redis, per_minute: int, burst: int, fail_open: FailOpen
    ) -> None:
        self.client = client
        self.per_minute = per_minute
        self.burst = burst
        self.fail_open = fail_open
        self._script = client.register_script(_GCRA)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    async def check(self, identity: str) -> Decision:
        """``identity`` must already be a digest or an address, never a raw key."""
        fail_open = self.fail_open
        if not self.enabled or fail_open.skip():
            return Decision(True)
        interval = 60.0 / self.per_minute
        try:
            async with asyncio.timeout(fail_open.timeout_s):
                allowed, wait = await self._script(
                    keys=[KEY.format(identity)], args=[repr(interval), self.burst]
                )
        except (RedisError, TimeoutError) as error:
            # Fail open: a Redis hiccup (or a hung Redis) must not take classification down.
            fail_open.failed(error)
            return Decision(True)
        fail_open.answered()
        if int(allowed):
            return Decision(True)
        RATE_LIMITED.inc()
        return Decision(False, max(1, math.ceil(float(wait))))


class FailureLimiter:
    """Failed authentications per client address: GCRA in Redis, apart from the request limit.

    Only keys that are not valid are counted or refused here: a valid key is always served (the
    limit bounds the cost of floods of wrong keys, not the guessing of keys of at least 16
    characters), so one client retrying an old key does not lock out the others behind its NAT
    address. An address found over its limit is also remembered in this process until its
    Retry-After, so that meanwhile its wrong keys are refused at no Redis cost. The budget is one
    per address across replicas: GCRA spends none of it on a refused attempt, so the failures that
    all replicas let through stay within the limit whether or not they ask Redis about the
    refused ones; another replica learns of the block at the address's next failure there. While
    Redis fails, failures are let through (:meth:`RateLimiter.check` fails open) except from the
    addresses remembered here. At most ``max_blocked`` addresses are remembered (the oldest go
    first: it only costs them one more check in Redis).
    """

    def __init__(self, limiter: RateLimiter, max_blocked: int = 10_000) -> None:
        self.limiter = limiter
        self.max_blocked = max_blocked
        self._blocked: dict[str, float] = {}  # address -> time.monotonic() of its Retry-After

    def blocked_for(self, address: str) -> int:
        """Seconds until ``address`` may try a key again here; 0 when it may now."""
        until = self._blocked.get(address)
        if until is None:
            return 0
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked[address]
            return 0
        RATE_LIMITED.inc()
        return max(1, math.ceil(left))

    async def failed(self, address: str) -> Decision:
        """Count one failed authentication; refused once the address is over its limit."""
        decision = await self.limiter.check(f"authfail:{address}")
        if not decision.allowed:
            while len(self._blocked) >= self.max_blocked:
                del self._blocked[next(iter(self._blocked))]
            self._blocked[address] = time.monotonic() + decision.retry_after_s
        return decision
