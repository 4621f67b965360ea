"""Quality gate and publication of a SavedModel as the next integer version, through
:class:`fdl.repository.Repository`, which serialises every writer of the repository.

An export is staged in a folder of its own per attempt, ``<model_dir>/.tmp-<model>-<job>-<hex>``
(a dot name: not a model, not a version), so two runs of one job never write into, or remove,
each other's export, and a new model's folder appears only when its first version is published.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import Timeout

from fdl import contract
from fdl.jobspec import PublishSpec, valid_name
from fdl.repository import Repository, sync_config
from fdl.repository_reads import find_job_version, version_dir, version_paths
from training.model_kind import ModelKind

log = logging.getLogger(__name__)

STAGING_PREFIX = ".tmp-"
# A staging folder nothing has changed for this long was left by a run that died mid-export (an
# export writes its files within minutes); younger ones may be another process's live export.
STAGING_STALE_AFTER_S = 6 * 3600.0


class GateClosed(Exception):
    """The quality gate, checked again under the repository lock, refused the version (a
    better one was published meanwhile); ``str()`` is the reason, as :func:`quality_gate` says."""


def _served_metadata(version_dir: Path) -> dict[str, Any] | None:
    try:
        metadata = json.loads((version_dir / contract.METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) else None


def _accuracy(metadata: dict[str, Any] | None) -> float | None:
    try:
        return float(metadata["metrics"]["test_accuracy"])  # type: ignore[index]
    except (ValueError, KeyError, TypeError):
        return None


def published_accuracy(version_dir: Path) -> float | None:
    return _accuracy(_served_metadata(version_dir))


def quality_gate(
    policy: PublishSpec, accuracy: float, model_path: Path, kind: ModelKind | None = None
) -> tuple[bool, str]:
    """Whether to publish, and why (the reason goes into the job result). With ``kind`` (the
    job's), ``only_if_better`` publishes nothing over a served version of another kind."""
    if accuracy < policy.min_accuracy:
        return False, (
            f"test accuracy {accuracy:.4f} is below publish.min_accuracy {policy.min_accuracy:.4f}"
        )
    reason = f"test accuracy {accuracy:.4f} >= publish.min_accuracy {policy.min_accuracy:.4f}"
    if policy.only_if_better:
        versions = version_paths(model_path)  # each from the folder the model server loads
        if versions:
            latest = max(versions)
            metadata = _served_metadata(versions[latest])  # one read, for both checks
            differ = kind.differences(metadata) if kind is not None and metadata else []
            if differ:
                return False, (
                    f"the served version {latest} is not comparable: {'; '.join(differ)}; "
                    "publish.only_if_better is set, so nothing was published (publish under "
                    "another name, or without only_if_better)"
                )
            previous = _accuracy(metadata)
            if previous is not None and accuracy <= previous:
                return False, (
                    f"test accuracy {accuracy:.4f} is not better than the served version "
                    f"{latest} ({previous:.4f}) and publish.only_if_better is set"
                )
            if previous is not None:
                reason += f" and better than the served version {latest} ({previous:.4f})"
        else:
            reason += "; no version published before"
    return True, reason


class GateUnderLock:
    """:func:`quality_gate` again, for :func:`publish` to run under the repository lock: of two
    jobs that passed it together, the worse one must not become the newest version. ``reason``
    is why its last check passed (None before one): what the job's result says when it
    publishes, since the served version that the gate before the wait named may have changed."""

    def __init__(self, policy: PublishSpec, accuracy: float, kind: ModelKind | None = None) -> None:
        self.policy, self.accuracy, self.kind = policy, accuracy, kind
        self.reason: str | None = None

    def __call__(self, model_path: Path) -> None:
        passed, reason = quality_gate(self.policy, self.accuracy, model_path, self.kind)
        if not passed:
            raise GateClosed(reason)
        self.reason = reason


def gate_under_lock(
    policy: PublishSpec, accuracy: float, kind: ModelKind | None = None
) -> GateUnderLock:
    return GateUnderLock(policy, accuracy, kind)


def _last_change(folder: Path) -> float:
    """The newest inode change (``st_ctime``) in a folder: copies that keep old modification
    times still count as changed now."""
    newest = folder.lstat().st_ctime
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            with contextlib.suppress(OSError):  # removed meanwhile
                newest = max(newest, os.lstat(os.path.join(root, name)).st_ctime)
    return newest


def sweep_staging(model_dir: Path, stale_after_s: float = STAGING_STALE_AFTER_S) -> list[Path]:
    """Remove staging folders (here and, from older releases, inside model folders) that nothing
    changed for ``stale_after_s``; returns those removed."""
    removed = []
    candidates = [*model_dir.glob(f"{STAGING_PREFIX}*"), *model_dir.glob(f"*/{STAGING_PREFIX}*")]
    for path in candidates:
        try:
            if not path.is_dir() or time.time() - _last_change(path) < stale_after_s:
                continue
        except OSError:  # removed meanwhile
            continue
        log.warning("removing staging folder %s, left by a run that died mid-export", path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def staging_dir(
    model_path: Path, job_id: str, stale_after_s: float = STAGING_STALE_AFTER_S
) -> Path:
    """A new folder path, unique to this attempt, to export into beside ``model_path`` (it does
    not exist yet); stale staging folders of dead runs are removed first."""
    model_dir = model_path.parent
    # Never its parent: a volume not mounted stays missing (the worker checked it at start).
    model_dir.mkdir(exist_ok=True)
    sweep_staging(model_dir, stale_after_s)
    return model_dir / f"{STAGING_PREFIX}{model_path.name}-{job_id}-{uuid.uuid4().hex}"


def publish(
    staged: Path,
    model_dir: Path,
    model_name: str,
    job_id: str,
    base_path_root: str | None = None,
    gate: Callable[[Path], None] | None = None,
    lock_wait_s: float = 120.0,
    waiting: Callable[[Path, float], None] | None = None,
) -> tuple[int, bool]:
    """Move ``staged`` in as the next version under the repository lock; idempotent on the job.

    Returns ``(version, published_now)``: a re-run of a job that already published (its record
    was lost, e.g. Redis went away after the rename) finds that version and publishes no other.
    ``gate`` (:func:`gate_under_lock`) runs under the lock and raises :class:`GateClosed` to
    publish nothing; ``staged`` is then left to the caller.

    The lock is waited for in rounds of ``lock_wait_s``. Without ``waiting``, one round, then
    :class:`filelock.Timeout`. With it, the wait goes on: after each round that did not get the
    lock, ``staged`` is marked as still in use (so that :func:`sweep_staging` never takes it for
    a dead run's) and ``waiting(lock_file, waited_s)`` runs, which raises to stop waiting
    (nothing is published; ``staged`` is left to the caller).
    """
    repository = Repository(model_dir, base_path_root, lock_timeout_s=lock_wait_s)
    started = time.monotonic()
    while True:
        try:
            return repository.publish(staged, model_name, job_id, gate)
        except Timeout as timeout:
            if waiting is None:
                raise
            with contextlib.suppress(OSError):
                os.utime(staged)  # its inode change time, which the sweep reads, is now
            waiting(Path(timeout.lock_file), time.monotonic() - started)


def published_before(model_dir: Path, model_name: str, job_id: str) -> dict[str, Any] | None:
    """The result of a job that already published a version (a re-run finishes with it)."""
    model_path = model_dir / model_name
    version = find_job_version(model_path, job_id)
    if version is None:
        return None
    try:
        folder = version_dir(model_path, version)  # the folder the model server loads it from
        metadata = json.loads((folder / contract.METADATA_FILE).read_text())
    except (OSError, ValueError):
        metadata = {}
    return {
        "model": model_name,
        "version": version,
        "published": True,
        "reason": f"version {version} was published by an earlier run of this job",
        "metrics": metadata.get("metrics") or {},
        "epochs_run": (metadata.get("runtime") or {}).get("epochs_run"),
        "tensorboard_dir": None,
    }


def published_by_record(model_dir: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`published_before` for a job record (its stored spec names the served model): what
    a job whose worker was lost after the rename published, so that it ends ``succeeded``
    rather than ``cancelled`` or ``failed`` with a version in the repository. A caller that
    ends the job so calls :func:`render_config_again`."""
    spec = record.get("spec")
    name = (spec.get("publish_as") or spec.get("model")) if isinstance(spec, dict) else None
    if not isinstance(name, str) or not valid_name(name):
        return None
    try:
        published = published_before(model_dir, name, str(record["id"]))
    except OSError:  # an unreadable repository: the job runs again, and a re-run checks too
        log.warning("cannot look for job %s's version in %s", record["id"], model_dir)
        return None
    return published


def render_config_again(
    model_dir: Path, base_path_root: str | None, job_id: str, held: Repository | None = None
) -> None:
    """Render ``models.config`` for a lost job's version: its worker may have died before
    writing it, and the version would then not be served until the next publish. ``held``: the
    repository whose lock the caller holds (:func:`fence`), else the lock is taken here."""
    try:
        if held is not None:
            held.write_config(held.render())
        else:
            sync_config(model_dir, base_path_root)
    except (OSError, ValueError):  # the next publish or promotion renders it again
        log.exception("job %s: could not render the config for its version", job_id)


# How long the end of a lost job waits for the repository's lock before it is left for later.
FENCE_WAIT_S = 1.0


@contextlib.contextmanager
def fence(
    model_dir: Path, base_path_root: str | None, wait_s: float = FENCE_WAIT_S
) -> Iterator[Repository]:
    """The repository's lock, held while a job whose run may still be alive (its heartbeat is
    stale, but its process may only be paused) is ended or queued again: that run checks its
    record under the same lock just before the rename of its version, and holds it through the
    rename (:meth:`fdl.repository.Repository.publish`), so it either published before the
    decision (which :func:`published_by_record`, called inside, then finds) or publishes
    nothing after it. Raises :class:`filelock.Timeout` after ``wait_s`` when another process
    holds the lock (such a run among others): the caller leaves the job for its next pass. A
    process that died holding the lock holds it no more (the kernel releases a ``flock``)."""
    repository = Repository(model_dir, base_path_root, lock_timeout_s=wait_s)
    with repository.locked():
        yield repository


class RepositoryFull(Exception):
    """The model repository's disk is full, or its owner over quota, while a job wrote its
    version (its export, or the files around it); ``str()`` is the job's error."""


# errno: what the repository is, what was refused, what to do (docs/training.md).
FULL_DISK = {
    errno.ENOSPC: ("is full", "no space left on device", "free space"),
    errno.EDQUOT: ("is over its quota", "disk quota exceeded", "free space or raise the quota"),
}


@contextlib.contextmanager
def naming_full_disk(model_dir: Path) -> Iterator[None]:
    """Raises a full disk met inside (an ``ENOSPC`` or ``EDQUOT`` OSError, or TensorFlow's
    ``ResourceExhaustedError`` that says so) as :class:`RepositoryFull`, which names the
    repository and the file (or the SavedModel) and says what to do. Nothing is retried: the job
    fails, and is submitted again once there is space."""
    try:
        yield
    except Exception as error:
        code = error.errno if isinstance(error, OSError) else None
        what = str(error.filename) if isinstance(error, OSError) and error.filename else None
        if type(error).__name__ == "ResourceExhaustedError":  # TensorFlow's writes (SaveV2)
            said = [number for number in FULL_DISK if os.strerror(number) in str(error)]
            code, what = (said or [None])[0], "the SavedModel"
        if code not in FULL_DISK:
            raise
        disk, refused, act = FULL_DISK[code]
        raise RepositoryFull(
            f"the model repository (FDL_MODEL_DIR={model_dir}) {disk}: {refused} while writing "
            f"{what or 'the new version'}; {act} and submit the job again"
        ) from error
