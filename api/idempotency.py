"""The ``Idempotency-Key`` header of ``POST /v1/jobs`` (draft-ietf-httpapi-idempotency-key-header,
with Stripe's semantics): a client that retries a submission whose answer it lost (a timeout, a
reset connection) under the same key gets the job its first try created, not a second job.

The key is scoped to the caller's API key and to the route; its job, and the hash of its
validated spec, are kept :data:`fdl.job_idempotency.KEY_TTL_S` in Redis. The same key with the
same spec answers 202 with the job as it is now and ``Idempotent-Replayed: true``; with another
spec, 422 ``idempotency_key_reused``; while the first submission is still being queued (its job
``queued``, its message not yet confirmed sent), 409 ``idempotency_key_in_use`` with a
Retry-After of 1 s while that job is young (:data:`IN_USE_FRESH_S`), else of the time left until
it counts as abandoned (:func:`abandoned_after_s`: longer than a live submission takes to confirm
its message). A key whose job was never queued (its submission answered 503, the job ended in
the same step as the key was let go; or the reaper ended it unconfirmed), was abandoned (then
ended ``failed`` as the reaper ends it, in the same step as the new job is created) or was
removed (pruned) names no job: a submission under it creates one.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from fastapi import Header, Request, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import ApiError
from fdl.job_idempotency import Claim, Earlier, create_once, earlier
from fdl.jobs import JobStore
from fdl.jobspec import JobSpec
from fdl.store_retry import retrying_within

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# Printable ASCII, no space: what a UUID, a ULID or any token a client makes is written in.
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")
IN_USE_RETRY_AFTER_S = 1
# An unconfirmed job younger than this most likely belongs to a submission still under way (one
# that Redis answers takes milliseconds): a retry under its key is told to come back in
# IN_USE_RETRY_AFTER_S; an older one, once it would count as abandoned.
IN_USE_FRESH_S = 2.0
# Store calls that a live submission may wait out between its record's creation and its
# message's confirmation, each up to FDL_JOB_STORE_TIMEOUT_S to connect and as long for its
# reply (redis-py tries each once): the create script's last try, the broker's send and its one
# retry (fdl.queue), the confirmation's last try. And the time the retries of the create
# (CREATE_WITHIN_S) and the confirmation (api.job_submission.CONFIRM_WITHIN_S) may start within,
# and a margin for a loaded gateway's threads.
SUBMISSION_STORE_WAITS = 4 * 2
CREATE_WITHIN_S = 1.0
ABANDON_MARGIN_S = 5.0
ROUTE = "POST /v1/jobs"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="A key of the client's (e.g. a UUID per job) that makes retries of this "
        "submission safe: another submission with the same key and spec within 24 h answers "
        f"the same job (with `{REPLAYED}: true`) instead of creating one; with another spec, "
        "422. 1 to 255 printable ASCII characters.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[!-~]+$"},
    ),
]

# The header of a replayed answer, in the route's OpenAPI document.
REPLAY_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {
        "headers": {
            REPLAYED: {
                "description": f"true: the job of an earlier submission with this {HEADER}",
                "schema": {"type": "string", "enum": ["true"]},
            }
        }
    }
}


def abandoned_after_s(store_timeout_s: float, confirm_within_s: float) -> float:
    """How long after its creation a job still queued unconfirmed counts as abandoned by its
    submission (the gateway stopped, or Redis failed, before it confirmed or ended it): longer
    than a live submission can take, from FDL_JOB_STORE_TIMEOUT_S (``store_timeout_s``) and the
    confirmation's retries (``confirm_within_s``); 23 s by default. A submission misjudged so
    would still run once: its job is ended, its message skipped, its confirmation answered 503."""
    waits = store_timeout_s * SUBMISSION_STORE_WAITS
    return waits + CREATE_WITHIN_S + confirm_within_s + ABANDON_MARGIN_S


def claim_of(
    request: Request, identity: str, spec: JobSpec, abandon_after_s: float
) -> Claim | None:
    """The submission's claim on its Idempotency-Key (None without one), scoped to ``identity``
    (the caller's, :func:`api.auth.authorize`'s) and the route; 422 ``invalid_idempotency_key``
    for a key that is not 1 to 255 printable ASCII characters, or sent more than once. The
    spaces and tabs around it are not part of it (RFC 9110's optional whitespace)."""
    values = request.headers.getlist(HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise _invalid(f"was sent {len(values)} times; send it once")
    key = values[0].strip(" \t")
    if not key:
        raise _invalid("is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise _invalid(f"is {len(key)} {'characters' if key.isascii() else 'bytes'} long")
    if (bad := _NOT_PRINTABLE.search(key)) is not None:
        raise _invalid(_not_printable(key, bad.start()))
    return Claim.of(f"{identity} {ROUTE}", key, spec.model_dump(), abandon_after_s)


def _not_printable(key: str, at: int) -> str:
    """What the key holds at ``key[at]`` (its first character that is not printable ASCII, so
    every one before is one byte), as the client sent it: Starlette decodes header values as
    Latin-1, one character per byte, so a UTF-8 ``é`` would read as ``Ã``."""
    char = key[at]
    if char.isascii():
        return f"holds {char!r} (U+{ord(char):04X}) at character {at + 1}"
    raw = key.encode("latin-1")
    try:
        char = raw.decode("utf-8")[at]
    except UnicodeDecodeError:
        return f"holds the byte 0x{raw[at]:02X} at byte {at + 1} (the key is not UTF-8)"
    encoded = " ".join(f"{byte:02X}" for byte in char.encode("utf-8"))
    return f"holds {char!r} (U+{ord(char):04X}, UTF-8 bytes {encoded}) at character {at + 1}"


def _invalid(what: str) -> ApiError:
    return ApiError(
        422,
        "invalid_idempotency_key",
        f"{HEADER} {what}: it must be 1 to {MAX_KEY_LENGTH} printable ASCII characters "
        "(! to ~, no spaces), e.g. a UUID",
    )


def create(
    store: JobStore, spec: JobSpec, job_id: str, queue: str, claim: Claim | None
) -> dict[str, Any]:
    """The new job's record (``unconfirmed``, as the route creates it), or under a claim whose
    key names a job already, that job's (:func:`answer`). The create script is tried again while
    Redis is unreachable, no try starting later than CREATE_WITHIN_S after the first: a try
    whose reply was lost finds its own job (as the confirmation does, api.job_submission)."""
    if claim is None:
        return store.create(spec.model_dump(), job_id, queue, unconfirmed=True)
    retrying = retrying_within(CREATE_WITHIN_S, (RedisConnectionError, RedisTimeoutError, OSError))
    spec_data = spec.model_dump()
    found = create_once(store, claim, spec_data, job_id, queue, unconfirmed=True, attempts=retrying)
    return answer(found, claim)


def replayed(store: JobStore, claim: Claim | None, job_id: str) -> dict[str, Any] | None:
    """The record of the job that the claim's key names already (:func:`answer`), or None."""
    if claim is None:
        return None
    found = earlier(store, claim, job_id)
    return None if found is None else answer(found, claim)


def answer(found: dict[str, Any] | Earlier, claim: Claim) -> dict[str, Any]:
    """A record as it is; the record of an earlier job of the same spec; 422 for another spec,
    409 while the earlier submission is still being queued (Retry-After: :func:`retry_after`)."""
    if not isinstance(found, Earlier):
        return found
    if found.outcome == "mismatch":
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"this {HEADER} was already used, with another job spec, for job {found.job_id}; "
            "send a new key for a new job",
        )
    if found.outcome == "in_progress" or found.record is None:
        raise ApiError(
            409,
            "idempotency_key_in_use",
            f"the submission of job {found.job_id} with this {HEADER} is still being queued "
            "(its message not yet confirmed sent); retry after the seconds that Retry-After says",
            headers={"Retry-After": str(retry_after(found.age_s, claim))},
        )
    return found.record


def retry_after(age_s: float, claim: Claim) -> int:
    """Seconds a retry under the key of a job still being queued, created ``age_s`` ago, should
    wait: IN_USE_RETRY_AFTER_S while it is young, else until it counts as abandoned (at least 1)."""
    if age_s < IN_USE_FRESH_S:
        return IN_USE_RETRY_AFTER_S
    return max(IN_USE_RETRY_AFTER_S, math.ceil(claim.abandon_after_s - age_s))


def mark_replayed(response: Response, record: dict[str, Any], job_id: str) -> bool:
    """Whether ``record`` is an earlier job's (not ``job_id``), said so in ``response``."""
    if record["id"] == job_id:
        return False
    response.headers[REPLAYED] = "true"
    return True
