"""The submission lock of a training queue: with ``FDL_MAX_QUEUED_JOBS``, counting the jobs that
wait and writing a new one's record is one step across a gateway's threads and every replica on
the Redis (:func:`submission_lock`, a redis-py lock), so that concurrent submissions cannot all
pass the cap. The Celery message is sent after it, outside the lock."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator

from redis.exceptions import LockNotOwnedError, RedisError
from redis.lock import Lock

from api.errors import store_busy
from fdl.jobs import JobStore

# Held for one count, which reads two fields of each job that may be queued (fdl/jobs.py:
# JobStore.waiting; once after an upgrade, of every record kept: about 16 µs a record on a 2-vCPU
# VM, 1.6 s for 100 000), the lock expires by itself after SUBMIT_LOCK_TIMEOUT_S should its holder
# die (a gateway killed mid-submission holds up that queue's submissions no longer). One that
# does not get it within SUBMIT_LOCK_WAIT_S answers 503 job_store_busy.
SUBMIT_LOCK_KEY = "fdl:submit-lock:{}"
SUBMIT_LOCK_TIMEOUT_S = 30.0
SUBMIT_LOCK_WAIT_S = 5.0
SUBMIT_LOCK_POLL_S = 0.02
# Tokens of submission locks this process may hold without knowing it, by queue: a taking that
# got no answer (Redis may still run its SET NX, or ran it and lost the reply), a release that
# failed. The next submission to the queue first deletes the lock if it still holds one of them.
_stale_tokens: dict[str, set[str]] = {}
_stale_guard = threading.Lock()
log = logging.getLogger("fdl.gateway")


@contextlib.contextmanager
def submission_lock(store: JobStore, queue: str) -> Iterator[None]:
    """Hold ``queue``'s submission lock: 503 job_store_busy when it stays taken for
    SUBMIT_LOCK_WAIT_S, RedisError when Redis is unreachable. Its release never raises (what was
    decided under it stands)."""
    _free_stale(store, queue)
    lock, token = _submit_lock(store, queue), uuid.uuid4().hex
    try:
        acquired = lock.acquire(token=token)
    except (RedisError, OSError):
        _remember(queue, token)  # Redis may have run (or still run) its SET NX
        raise
    if not acquired:
        raise store_busy(f"the submission lock of queue {queue!r}", SUBMIT_LOCK_WAIT_S)
    try:
        yield
    finally:
        _release(lock, queue, token)


def _submit_lock(store: JobStore, queue: str) -> Lock:
    lock: Lock = store.redis.lock(
        SUBMIT_LOCK_KEY.format(queue),
        timeout=SUBMIT_LOCK_TIMEOUT_S,
        sleep=SUBMIT_LOCK_POLL_S,
        blocking_timeout=SUBMIT_LOCK_WAIT_S,
    )
    return lock


def _release(lock: Lock, queue: str, token: str) -> None:
    """Give the submission lock back; never raises (what was decided under it stands)."""
    try:
        lock.release()
    except LockNotOwnedError:
        log.warning(
            "the submission lock of queue %r expired (after %ss) before its holder was done: "
            "a submission meanwhile may have passed FDL_MAX_QUEUED_JOBS",
            queue,
            SUBMIT_LOCK_TIMEOUT_S,
        )
    except (RedisError, OSError) as error:  # freed by the next submission here, or expires
        _remember(queue, token)
        log.warning("the submission lock of queue %r was not released: %r", queue, error)


def _remember(queue: str, *tokens: str) -> None:
    if tokens:
        with _stale_guard:
            _stale_tokens.setdefault(queue, set()).update(tokens)


def _free_stale(store: JobStore, queue: str) -> None:
    """Delete the queue's submission lock if it still holds a token this process remembered;
    RedisError when Redis is unreachable (the tokens not yet settled stay remembered)."""
    with _stale_guard:
        pending = list(_stale_tokens.pop(queue, ()))
    try:
        while pending:
            _delete_if_held(store, queue, pending[-1])
            pending.pop()
    finally:
        _remember(queue, *pending)


def _delete_if_held(store: JobStore, queue: str, token: str) -> None:
    """redis-py's compare-and-delete of the queue's submission lock with ``token``."""
    lock = _submit_lock(store, queue)
    lock.local.token = token
    with contextlib.suppress(LockNotOwnedError):  # expired, or never taken with it
        lock.release()
