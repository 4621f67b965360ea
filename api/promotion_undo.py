"""The undo of a change of labels that failed or was cut short (api/promotion.py): its files put
back, then the old config sent to the replicas that had taken a config of the change.

A change the gateway's shutdown cancelled (api/shutdown.py) has UNDO_S for the replicas: the 503
of its request must go out within the app's SETTLE_S, before the process exits. Before anything
is sent, the files as put back get undo records of their own; they are dropped once every
replica has taken the old config. A replica that does not answer in time (a server loading or
stalled), or a process killed meanwhile, leaves them: the next process that takes the lock rolls
back from them (no change to the files) and a gateway's start or change sends the restored config
to every replica (:func:`fdl.repository_files.roll_back`, :meth:`api.promotion.Promoter._turn`).
So the undo is never left half made: either done, or left to the next taker in full.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from api.errors import ApiError
from api.replica_configs import ReplicaConfigs, parse_config
from api.serving_client import ServingClient
from api.shutdown import UNDO_S
from fdl.repository import Repository
from fdl.repository_files import UndoPoint

log = logging.getLogger(__name__)


@dataclass
class Change:
    """One change of labels, under the lock: the replicas it goes to, how to undo its writes, and
    the replicas that have taken a config of it (they get the old one back if it fails)."""

    replicas: list[ServingClient]
    undo: UndoPoint
    deadline: float  # of all its calls and waits (monotonic): one promote_timeout_s in all
    written: bool = False
    reloaded: list[ServingClient] = field(default_factory=list)


async def undo(
    change: Change, repository: Repository, replicas: ReplicaConfigs, error: BaseException
) -> None:
    """Undo ``change``, which ``error`` ended. Never raises but a cancellation of its own: an
    error of the undo is logged, and the caller raises ``error``."""
    change.undo.restore()  # renames only: works on a full disk, never raises
    if not change.written:
        return
    if not isinstance(error, asyncio.CancelledError):
        try:  # a deadline of its own: the change's may be spent
            await replicas.send_file(change.reloaded, repository.config_path)
        except Exception:  # a closed channel (grpc.aio.UsageError): the replica sync sends it
            log.exception("the restored model config was not sent")
        return
    # On the loop, not in a thread: a second cancellation would leave the thread beside us.
    try:
        left: UndoPoint | None = repository.undo_point()
    except OSError:
        log.exception("no undo records of the restored model config: it is sent without them")
        left = None
    if await _sent(change.reloaded, repository, replicas, time.monotonic() + UNDO_S):
        if left is not None:
            try:
                left.discard()
            except OSError:  # the next taker of the lock sends the config again
                log.exception("the undo records of the restored model config were kept")
        return
    log.warning(
        "the gateway is stopping: the restored model config was not taken by every replica in "
        "%.1f s; its undo records are left for the next process that takes the lock",
        UNDO_S,
    )


async def _sent(
    reloaded: list[ServingClient],
    repository: Repository,
    replicas: ReplicaConfigs,
    deadline: float,
) -> bool:
    """Whether every replica of ``reloaded`` took the config file as it is now, by ``deadline``."""
    try:
        config = parse_config(repository.config_path.read_text())
        for replica in reloaded:
            await replicas.reload(replica, config, deadline)
    except ApiError as error:
        log.error("a replica did not take the restored model config: %s", error.message)
        return False
    except Exception:  # an unreadable file, a closed channel (grpc.aio.UsageError)
        log.exception("the restored model config was not sent")
        return False
    return True
