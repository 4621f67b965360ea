"""A routine stop of the training worker hands its running job back, uncounted.

A worker is stopped routinely: Ctrl-C or SIGTERM to `fdl up` (supervisord sends SIGTERM to the
worker's whole process group), ``docker stop``, a Kubernetes rollout (SIGTERM to the main process
alone: tini forwards it to ``fdl-worker``). Before, the pool process died of its SIGTERM
mid-training and the job counted a lost attempt, or, the main process alone signalled, the
worker waited for the job until it was SIGKILLed and a reaper re-ran it later, again counting an
attempt: three rollouts during one job ended it ``failed``.

Now the stop reaches the run through either signal, and the run stops at its next check, as a
cancel does (between batches, :class:`training.callbacks.JobCallback`; before and after loading
its data, :mod:`training.job`):

- the main process's first stop signal (Celery's warm shutdown: SIGTERM, or the first Ctrl-C)
  sets a flag in memory shared with its pool processes (:func:`stop_runs`, from Celery's
  ``worker_shutting_down`` signal, :mod:`training.tasks`): an anonymous shared mapping made
  here, at import in the main process, before the pool forks (billiard forks on Linux; where
  it starts its processes afresh instead, macOS, they share nothing, and a stop of the main
  process alone lets the job finish, as before);
- a SIGTERM that reaches the pool process while it runs a job (a process-group stop) sets a flag
  of its own (:func:`handing_back_on_sigterm`), instead of ending the process. Not in the main
  process, which runs the job itself with ``-P solo`` (extra options of ``fdl-worker``): there
  the SIGTERM stays Celery's, whose warm shutdown sets the first flag (before, the job's own
  handler took it: the worker never stopped, and took the job it handed back again, forever).

The run then hands its job back (:func:`hand_back`), its last checkpoint written after the last
epoch it finished (:mod:`training.checkpoints`: the next run resumes after that epoch): one atomic
store step (:meth:`fdl.jobs.JobStore.hand_back`), only while the record still shows this run:
``queued`` again, the attempt its claim counted taken back, the reason in its ``queued`` event; its
message is sent again, and the task returns, so the worker exits within seconds. Up to
FDL_MAX_HAND_BACKS hand-backs of a job are not counted; past them each counts its attempt as a
reaper counts a lost run's, and the job ends ``failed`` at FDL_MAX_ATTEMPTS: a job that itself gets
its worker stopped (its memory evicts the pod, it starves the liveness probe) does not go round for
ever. A send that fails puts the message the task runs back on the queue instead
(:mod:`training.tasks`); a worker SIGKILLed between the store step and the send leaves the job
queued without a message, which a reaper sends again FDL_RESEND_QUEUED_AFTER_S later. A run past
its training (evaluating, exporting, publishing) finishes instead, if its worker's grace allows
(else it is SIGKILLed and left to the reaper): what is left is short, and throwing the trained
model away would cost the most.

The SIGTERMs that Celery's own main process sends a pool process are kills and stay so (the
process raises ``SystemExit`` as before): the hard time limit's (:class:`training.tasks.
TrainRequest.on_timeout`), a cold shutdown's (a second Ctrl-C, SIGQUIT: ``cancel``), a revoke's
(``terminate``). Before it sends one, the main process marks the process's pid here
(:func:`mark_killed`), and the pool process's handler, seeing its own pid marked, lets the
signal kill it as Celery's handler would; a mark that a process before it left on its pid is
cleared by the main process too (:func:`unmark`) as the process takes its job, unless a revoke
waits to kill it then (never by the pool process itself: its clearing could come after that
revoke's mark, and the kill would hand the job back). A second stop signal (a cold shutdown)
and SIGKILL are therefore as before: the job is left to the reaper (FDL_STALE_AFTER_S),
counting an attempt.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from billiard.process import current_process

from fdl.jobs import JobStatus, JobStore, NotThisRun
from fdl.store_retry import TRANSIENT_ERRORS
from training.checkpoint_files import last_epoch
from training.settings import WorkerSettings

log = logging.getLogger(__name__)

# Shared with every pool process the main process forks after this import: the flag of a stop
# (offset 0), then the pids of pool processes that the main process is about to kill.
_SLOTS = 16
_PID = struct.Struct("q")
_shared = mmap.mmap(-1, _PID.size * (1 + _SLOTS))
# A SIGTERM that reached this pool process during its current run (a list: set from a handler).
_sigterm_seen = [False]


class HandBack(Exception):
    """The run stops to hand its job back, its worker stopping; the words say where it was."""


def stop_runs() -> None:
    """Tell every run of this worker's pool processes to hand its job back at its next check
    (the main process, at its first stop signal; safe in a signal handler)."""
    _PID.pack_into(_shared, 0, 1)


def _slots() -> list[int]:
    return [_PID.unpack_from(_shared, _PID.size * (1 + i))[0] for i in range(_SLOTS)]


def mark_killed(pid: int) -> None:
    """Say that the SIGTERM the main process is about to send pool process ``pid`` is a kill."""
    slots = _slots()
    free = slots.index(pid) if pid in slots else (slots.index(0) if 0 in slots else pid % _SLOTS)
    _PID.pack_into(_shared, _PID.size * (1 + free), pid)


def unmark(pid: int) -> None:
    """Forget a mark of ``pid`` (one left for a process that had the pid before): the main
    process, as a pool process takes a job that is not to be killed at once."""
    for index, marked in enumerate(_slots()):
        if marked == pid:
            _PID.pack_into(_shared, _PID.size * (1 + index), 0)


def requested() -> bool:
    """Whether this process's run should hand its job back: its worker is stopping."""
    return _sigterm_seen[0] or _PID.unpack_from(_shared, 0)[0] != 0


def check(where: str) -> None:
    """:class:`HandBack` (saying ``where``) when the run should hand its job back."""
    if requested():
        raise HandBack(where)


def _in_pool_process() -> bool:
    """Whether this process is a pool process of the worker, not its main process (billiard
    names it so, as Celery's own signal handlers tell them apart), which runs the job itself
    with ``-P solo``: there, Celery's SIGTERM handler must stay, to start the warm shutdown
    whose :func:`stop_runs` stops the run."""
    name: str = current_process().name
    return name != "MainProcess"


@contextmanager
def handing_back_on_sigterm() -> Iterator[None]:
    """While a pool process runs a job: a SIGTERM asks the run to hand its job back
    (:func:`requested`) instead of ending the process, unless the main process marked the
    process's pid (:func:`mark_killed`: its own kill), which goes to the handler there was
    (Celery's, billiard's: ``SystemExit``). Outside a job that handler is back: an idle pool
    process ends as before. Only in the main thread, where Python runs signal handlers; a
    SIGTERM that the process ignores (``REMAP_SIGTERM``) stays ignored."""
    previous = signal.getsignal(signal.SIGTERM)
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread or previous == signal.SIG_IGN or not _in_pool_process():
        yield
        return
    _sigterm_seen[0] = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if os.getpid() not in _slots():
            _sigterm_seen[0] = True
            return
        signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            previous(signum, frame)
        else:  # the default: the signal ends the process
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def reasons(
    worker: str, where: str, settings: WorkerSettings, resumes_after: int | None = None
) -> tuple[str, str, str]:
    """What a hand-back says (:meth:`fdl.jobs.JobStore.hand_back`'s ``reasons``): of a run not
    counted, of one counted (past FDL_MAX_HAND_BACKS), and the error of a job out of attempts.
    ``resumes_after``: the epochs done by the job's last checkpoint (:mod:`training.checkpoints`),
    None when it has none."""
    run = f"handed back by worker {worker}, which is stopping, {where}"
    if resumes_after is None:
        again = f"{run}; it starts over from its first epoch, and this run"
    else:
        again = f"{run}; it resumes after epoch {resumes_after}, its last checkpoint, and this run"
    limit = f"FDL_MAX_HAND_BACKS ({settings.max_hand_backs})"
    return (
        f"{again} is not counted as an attempt",
        f"{again} counts as an attempt: the job was handed back more than {limit} times",
        f"{run}: the job was handed back more than {limit} times, its runs since count as "
        f"attempts, and it is out of attempts (FDL_MAX_ATTEMPTS {settings.max_attempts}); "
        "giving up",
    )


# Sends a job's message again: (job id, queue, its spec's max_duration_s or None).
Send = Callable[[str, str, float | None], None]


def hand_back(
    store: JobStore,
    settings: WorkerSettings,
    job_id: str,
    worker: str,
    where: str,
    resend: Callable[[], None] | None,
) -> JobStatus | None:
    """Hand ``job_id`` back (:meth:`fdl.jobs.JobStore.hand_back`): queued again, the attempt of
    this run (``worker``, the name it claimed the job under) not counted, up to
    FDL_MAX_HAND_BACKS hand-backs of the job (past them counted, and ``failed`` at
    FDL_MAX_ATTEMPTS), its message sent again with ``resend`` (None: the reaper re-sends it after
    FDL_RESEND_QUEUED_AFTER_S; an error of ``resend`` is logged and raised: the task puts the
    message it runs back on the queue instead, :mod:`training.tasks`); or ``cancelled`` when a
    cancel came meanwhile. The status it was left in; None when the job is no longer this
    run's, or when the job store stayed away longer than FDL_REDIS_RETRY_S (the job, left
    ``running``, is the reaper's once its heartbeat is stale, the run counted)."""
    last = last_epoch(settings.checkpoint_root, job_id) if settings.checkpoints else None
    texts = reasons(worker, where, settings, last)
    limits = (settings.max_hand_backs, settings.max_attempts)
    try:
        status = store.hand_back(job_id, worker, texts, *limits)
    except NotThisRun:
        log.warning("job %s is no longer this run's; not handed back", job_id)
        return None
    except TRANSIENT_ERRORS as error:
        log.error("job %s could not be handed back (%s); left to the reaper", job_id, error)
        return None
    if status is JobStatus.CANCELLED:
        log.info("job %s ended cancelled: its cancel came before its hand-back", job_id)
        return status
    stopping = (job_id, status, worker, where)
    log.warning("job %s handed back, now %s: worker %s is stopping (%s)", *stopping)
    if status is not JobStatus.QUEUED or resend is None:
        return status
    try:
        resend()
    except Exception:
        log.exception("job %s: its message could not be sent again", job_id)
        raise
    return status
