"""API keys with roles (``admin``, ``classify``) and the per-key rate limit.

Keys are loaded once at start-up from the environment and secret files. A presented key is
compared with every known key in constant time (``hmac.compare_digest``), so the answer's timing
says nothing about the keys. Keys are never logged: the rate limiter and the logs see a short
SHA-256 digest only.

A key that is not valid counts against its client address's limit of failed authentications
(``FDL_AUTH_FAILURES_PER_MINUTE``); past it, the address's keys that are not valid get 429 without
a Redis call. A valid key is always served, whatever its address's failures.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum

from fastapi import Request

from api.errors import ApiError
from api.ratelimit import FailureLimiter, RateLimiter, address_bucket
from api.settings import GatewaySettings


class Role(StrEnum):
    ADMIN = "admin"
    CLASSIFY = "classify"


# What each role may do: admin keys may also classify.
GRANTS: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset({Role.ADMIN, Role.CLASSIFY}),
    Role.CLASSIFY: frozenset({Role.CLASSIFY}),
}
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Keyring:
    def __init__(self, keys: dict[str, Role]) -> None:
        self._keys = [(k.encode(), role) for k, role in keys.items()]

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Keyring:
        keys = {k: Role.CLASSIFY for k in settings.classify_only_keys()}
        keys.update({k: Role.ADMIN for k in settings.admin_keys()})  # admin wins on overlap
        return cls(keys)

    def role_of(self, token: str) -> Role | None:
        presented = token.encode()
        found: Role | None = None
        for key, role in self._keys:  # no early exit: every key is compared
            if hmac.compare_digest(presented, key) and found is None:
                found = role
        return found


def bearer_token(request: Request) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; None: no key.

    An ``Authorization`` header of another scheme (``Basic`` from an auth proxy or a browser's
    saved login, ``Negotiate``) is no API key: it is ignored as if absent, so ``X-API-Key`` is
    read, open routes stay open and it is no failed key. ``Bearer`` wins over ``X-API-Key``, and
    ``Bearer`` with no token is "" (a key that is not valid): that client meant to send a key.
    """
    # One pass over the raw headers, the first of each name winning as in request.headers.get:
    # on open classify routes both are usually absent, and each absent lookup through
    # request.headers costs a raised and caught KeyError on the hot path.
    authorization: bytes | None = None
    api_key: bytes | None = None
    for name, value in request.scope["headers"]:
        if name == b"authorization" and authorization is None:
            authorization = value
        elif name == b"x-api-key" and api_key is None:
            api_key = value
    if authorization:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return api_key.decode("latin-1").strip() if api_key is not None else None


def client_address(request: Request) -> str:
    """The client's address as the limits count it (an IPv6 client by its /64, any text that is
    not an IP address as ``invalid-address``)."""
    return address_bucket(request.client.host) if request.client else "unknown"


def _too_many_failures(retry_after_s: int) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"too many requests with an API key that is not valid from this address; "
        f"retry in {retry_after_s} s",
        headers={"Retry-After": str(retry_after_s)},
    )


async def _role_of(request: Request, token: str) -> Role:
    """The key's role. A key that is not valid is 401, counted against the client's address;
    past its limit, 429 for the address's keys that are not valid until Retry-After."""
    keyring: Keyring = request.app.state.keyring
    role = keyring.role_of(token)
    if role is not None:
        return role
    failures: FailureLimiter = request.app.state.auth_failures
    address = client_address(request)
    wait = failures.blocked_for(address)
    if wait:
        raise _too_many_failures(wait)
    decision = await failures.failed(address)
    if not decision.allowed:
        raise _too_many_failures(decision.retry_after_s)
    raise ApiError(401, "unauthorized", "the API key is not valid", headers=_CHALLENGE)


async def authorize(request: Request, needed: Role, open_access: bool = False) -> str:
    """Check the key for ``needed``, then the rate limit. Returns the caller's identity."""
    token = bearer_token(request)
    if token is None and open_access:
        identity = f"ip:{client_address(request)}"
    elif token is None:
        raise ApiError(
            401,
            "unauthorized",
            "an API key is required: Authorization: Bearer <key>",
            headers=_CHALLENGE,
        )
    else:
        role = await _role_of(request, token)
        if needed not in GRANTS[role]:
            raise ApiError(
                403, "forbidden", f"this key has the '{role}' role; '{needed}' is required"
            )
        identity = f"key:{key_digest(token)}"
    request.state.identity = identity
    limiter: RateLimiter = request.app.state.limiter
    decision = await limiter.check(identity)
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests; retry in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
        )
    return identity


async def require_admin(request: Request) -> str:
    return await authorize(request, Role.ADMIN)


async def require_classify(request: Request) -> str:
    settings: GatewaySettings = request.app.state.settings
    return await authorize(request, Role.CLASSIFY, open_access=settings.classify_open)
