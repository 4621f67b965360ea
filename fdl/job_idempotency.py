"""Job submissions under an ``Idempotency-Key``: one job per key, whatever the retries.

A key is scoped by its caller (the gateway's identity of the API key) and route: its mapping in
Redis (``fdl:idempotency:<sha256>``, a hash of the job's id and of its spec) lives
:data:`KEY_TTL_S` from the submission that created the job. The record and the mapping are
written by one Lua script (:data:`fdl.job_scripts.CREATE_ONCE_SCRIPT`), so concurrent
submissions under one key create one job; the others find the earlier job (:class:`Earlier`).
A job that was never queued, or whose submission was abandoned before it confirmed its message
(:attr:`Claim.abandon_after_s`), does not hold its key. A submission refused by the broker ends
its job and lets the key go in one step (:func:`end_not_queued`), or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from fdl.job_reads import keyed
from fdl.job_records import (
    EVENTS_KEY,
    INDEX_KEY,
    JOB_KEY,
    JobStatus,
    decode_record,
    new_record,
    script_args,
)
from fdl.job_scripts import CREATE_ONCE_SCRIPT, END_NOT_QUEUED_SCRIPT
from fdl.jobs import JobStore

# How long a key names its job: a day after the submission, as Stripe keeps its keys (a client
# retries within minutes). A key whose job was removed sooner (FDL_JOB_RETENTION_S after it
# ended) names no job any more: a submission under it creates a new one.
KEY_TTL_S = 24 * 3600
MAPPING_KEY = "fdl:idempotency:{}"


# What runs a script's call: once (the default), or again while Redis is unreachable (a tenacity
# ``Retrying`` is one).
Attempts = Callable[[Callable[[], Any]], Any]


def _once(call: Callable[[], Any]) -> Any:
    return call()


@dataclass(frozen=True)
class Claim:
    """A submission's key, as stored: its mapping's Redis key and the hash of its spec; and
    ``abandon_after_s``, how long a job of a submission under the key may stay queued with its
    message unconfirmed before a later submission under the key counts it abandoned: ends it
    (as the reaper would, with :func:`taken_over`'s error) and creates a new job."""

    mapping: str
    body: str
    abandon_after_s: float

    @classmethod
    def of(cls, scope: str, key: str, spec: dict[str, Any], abandon_after_s: float) -> Claim:
        """The claim of ``key`` sent by ``scope`` (caller and route) with ``spec`` (the
        validated spec as JSON-ready data; its hash: sorted keys, so the order of the client's
        fields does not count, nor do the defaults it left out)."""
        name = hashlib.sha256(json.dumps([scope, key]).encode()).hexdigest()
        canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        return cls(MAPPING_KEY.format(name), digest, abandon_after_s)


@dataclass(frozen=True)
class Earlier:
    """The job that an earlier submission under the key created: ``replay`` (same spec; its
    record), ``mismatch`` (another spec) or ``in_progress`` (its message not yet confirmed
    sent: that submission may still be under way; ``age_s`` since it was created)."""

    outcome: Literal["replay", "mismatch", "in_progress"]
    job_id: str
    record: dict[str, Any] | None = None
    age_s: float = 0.0


def create_once(
    store: JobStore,
    claim: Claim,
    spec: dict[str, Any],
    job_id: str,
    queue: str | None = None,
    unconfirmed: bool = False,
    attempts: Attempts = _once,
) -> dict[str, Any] | Earlier:
    """:meth:`fdl.jobs.JobStore.create` under ``claim``: the new job's record, or the
    :class:`Earlier` job when the key already names one (nothing written then). ``attempts``
    runs the script (e.g. a tenacity ``Retrying``, which runs it again while Redis is
    unreachable): its arguments are made once, so a try whose reply was lost finds its own job
    on the next (``created``)."""
    now = store.now()
    record = new_record(job_id, spec, now, queue, unconfirmed)
    event = {"status": JobStatus.QUEUED.value}
    args = script_args(event, *_own(claim, now, job_id, creating=True), **record)
    found = attempts(lambda: _run(store, claim, job_id, args))
    return record if found is None else cast(Earlier, found)


def earlier(store: JobStore, claim: Claim, job_id: str) -> Earlier | None:
    """The job that the key already names, or None (a submission under it creates one; an
    abandoned job is left as it is); ``job_id``: the id a new job would get."""
    return _run(store, claim, job_id, script_args({}, *_own(claim, store.now(), job_id)))


def end_not_queued(store: JobStore, claim: Claim, job_id: str, error: str) -> bool:
    """End a job still queued ``failed`` with ``error`` (its message was refused) and let the
    key go while it names that job, in one step (:data:`fdl.job_scripts.END_NOT_QUEUED_SCRIPT`);
    True when it ended. When this fails, the key keeps naming the job."""
    failed = JobStatus.FAILED.value
    event = {"status": failed, "result": None, "error": error}
    args = script_args(event, job_id, **event, finished_at=store.now())
    script = store.redis.register_script(END_NOT_QUEUED_SCRIPT)
    keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id), claim.mapping]
    return int(cast(Any, script(keys=keys, args=args))) == 1


def abandoned(store: JobStore, claim: Claim, queue: str) -> bool:
    """Whether the key names a job of ``queue`` that a submission under it would take over
    (CREATE_ONCE_SCRIPT's rule): still queued, its message unconfirmed, created
    :attr:`Claim.abandon_after_s` or longer ago (Redis's clock)."""
    job_id = cast(str | None, store.redis.hget(claim.mapping, "job"))
    record = None if job_id is None else store.get(job_id)
    if record is None or record.get("queue") != queue:
        return False
    now = store.now()
    age = now - float(record.get("created_at") or now)
    unconfirmed = record.get("status") == JobStatus.QUEUED.value and record.get("enqueued") is False
    return unconfirmed and age >= claim.abandon_after_s


def taken_over(claim: Claim, job_id: str) -> str:
    """The error of a job ended as abandoned by a submission under its key that created job
    ``job_id`` instead (its message, if sent, is skipped: a worker's claim, a late confirmation
    find it ended and never run)."""
    return (
        f"the job was not run: its submission was not confirmed within {claim.abandon_after_s:g} "
        f"s; a retry under the same Idempotency-Key submitted job {job_id} instead"
    )


def _own(claim: Claim, now: float, job_id: str, creating: bool = False) -> tuple[str, ...]:
    """CREATE_ONCE_SCRIPT's own arguments, ARGV[4..11]."""
    failed, error = JobStatus.FAILED.value, taken_over(claim, job_id)
    ended = {"status": failed, "result": None, "error": error, "finished_at": now}
    event = {"status": failed, "result": None, "error": error}
    return (
        repr(now),
        job_id,
        claim.body,
        str(KEY_TTL_S),
        "1" if creating else "",
        repr(claim.abandon_after_s),
        json.dumps(event),
        json.dumps({field: json.dumps(value) for field, value in ended.items()}),
    )


def _run(store: JobStore, claim: Claim, job_id: str, args: list[str]) -> Earlier | None:
    script = store.redis.register_script(CREATE_ONCE_SCRIPT)
    keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id), INDEX_KEY, claim.mapping]
    reply = cast(list[Any], script(keys=keys, args=args))
    outcome, found = str(reply[0]), str(reply[1])
    if outcome in ("created", "free"):
        return None
    if outcome == "in_progress":
        return Earlier("in_progress", found, age_s=float(reply[2]))
    record = None
    if outcome == "replay":
        flat = cast(list[str], reply[2])
        record = keyed(found, decode_record(dict(zip(flat[::2], flat[1::2], strict=True))))
    return Earlier(cast(Any, outcome), found, record)
