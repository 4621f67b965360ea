"""The gateway's access to the shared model repository, never on the event loop: its
cross-process lock waited for in a worker thread, and its reads and writes done in one, with a
failing disk answered by a coded error (a full disk 507, anything else 500), never a bare 500."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import filelock

from api.errors import ApiError
from fdl.repository import Repository

T = TypeVar("T")
log = logging.getLogger(__name__)
UNCHANGED = "labels.json and models.config are left as they were"


def repository_error(error: OSError) -> ApiError:
    """507 ``insufficient_storage`` for a full disk or quota, else 500 ``repository_error``
    (a permission error, a read-only file system, an I/O error), naming the cause."""
    reason = error.strerror or type(error).__name__
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ApiError(
            507, "insufficient_storage", f"the model repository is full ({reason}); {UNCHANGED}"
        )
    return ApiError(500, "repository_error", f"the model repository failed: {reason}; {UNCHANGED}")


async def io(call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in a worker thread; its ``OSError`` as :func:`repository_error`."""
    try:
        return await asyncio.to_thread(call, *args)
    except OSError as error:
        raise repository_error(error) from error


@asynccontextmanager
async def repository_locked(
    repository: Repository, local: asyncio.Lock, timeout_s: float
) -> AsyncIterator[None]:
    """This process's turn (``local``), then the repository's lock, acquired in a worker thread
    (503 ``repository_busy`` + ``Retry-After`` after ``timeout_s``)."""
    async with local:
        lock = repository.file_lock()
        acquiring = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
        try:
            await asyncio.shield(acquiring)
        except filelock.Timeout as error:
            raise ApiError(
                503,
                "repository_busy",
                f"another writer held the model repository for {timeout_s:.0f}s",
                headers={"Retry-After": "1"},
            ) from error
        except OSError as error:  # the lock file cannot be opened (a read-only file system)
            raise repository_error(error) from error
        except asyncio.CancelledError:
            # The thread may still get the lock: give it back as soon as it does.
            def release_once_acquired(done: asyncio.Future[Any]) -> None:
                if done.exception() is None:
                    lock.release()

            acquiring.add_done_callback(release_once_acquired)
            raise
        try:
            yield
        finally:
            lock.release()


def recover_at_start(repository: Repository) -> bool:
    """At the gateway's start, roll back a change a dead gateway left half made (a restarted
    pod is often the next to come), if the lock is free at once: a busy lock's holder rolls it
    back itself. Never stops the start (a missing or read-only repository is only logged).
    Whether a change was rolled back: the gateway then sends the restored config to the model
    servers (:meth:`api.promotion.Promoter.send_restored`)."""
    if repository.model_dir.is_dir():
        return repository.recover_if_free()  # logs what it rolls back
    return False
