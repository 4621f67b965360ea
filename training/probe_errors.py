"""What an error met by ``fdl-worker-probe`` (:mod:`training.probe`) means, and the one line that
tells it: Redis away (unreachable, too slow, loading, refusing writes: the probe passes), a
password Redis refuses, or anything else (a setting a restart with a fixed configuration would
mend): the probe fails."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import redis

from fdl.store_retry import REFUSALS, refusal_class

# The most characters of an error that a line quotes.
DESCRIBE_CHARS = 160
# What an error shows (:func:`verdict_of`).
AWAY, PASSWORD, REFUSED = "away", "password", "refused"


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()  # an error, its cause or context, theirs...
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def verdict_of(error: BaseException) -> str:
    """:data:`AWAY` (Redis unreachable, too slow, loading, or refusing writes), :data:`PASSWORD`
    (it refuses the password) or :data:`REFUSED` (anything else: a setting or an ACL that a
    restart with a fixed configuration would mend, or a bug)."""
    chain = list(_chain(error))
    if any(isinstance(e, redis.AuthenticationError) for e in chain):
        return PASSWORD
    # A TLS handshake that fails (a certificate, a plain port) is a setting, except an
    # end of the connection in the middle of it (Redis going away).
    tls = (ssl.SSLEOFError, ssl.SSLZeroReturnError)
    if any(isinstance(e, ssl.SSLError) and not isinstance(e, tls) for e in chain):
        return REFUSED
    if any("CERTIFICATE_VERIFY_FAILED" in str(e) for e in chain):
        return REFUSED  # redis-py quotes the error only in its own message
    from kombu.exceptions import OperationalError

    for link in chain:
        if isinstance(link, redis.ResponseError):
            return AWAY if issubclass(refusal_class(link), REFUSALS) else REFUSED
        if isinstance(link, (redis.ConnectionError, redis.TimeoutError, OSError)):
            return AWAY
        if isinstance(link, redis.RedisError):
            return REFUSED
    return AWAY if any(isinstance(e, OperationalError) for e in chain) else REFUSED


def describe(error: BaseException, secret: str | None = None) -> str:
    """An error in one line of at most :data:`DESCRIBE_CHARS` (cut after a word, `` ...``),
    ``secret`` (the password, which no client's message is known to quote) blanked out."""
    text = " ".join(str(error).split()) or type(error).__name__
    if secret:
        text = text.replace(secret, "***")
    prefix = f"{type(error).__name__}: "
    if len(prefix + text) <= DESCRIBE_CHARS:
        return prefix + text
    room = DESCRIBE_CHARS - len(prefix) - len(" ...")
    head, space, _ = text[: room + 1].rpartition(" ")
    return prefix + (head if space and head else text[:room]) + " ..."
