"""Temporary files of dataset caches and downloads that a crashed process left behind.

A write into a cache or download folder goes to a temporary name (a folder being unpacked,
arrays being saved, a ``.part`` download) that is renamed into place when complete, and removed
when the write fails (a full disk). Only a process that dies mid-write (SIGKILL, OOM, a lost
node) leaves it: ~180 MB for CIFAR-10, which nothing else would ever remove.

Every process that writes such files into a folder holds the folder's fill lock (``.fill.lock``,
``flock``) shared while it does, so several workers fill one cache at once. On taking it, a
process that could take it exclusively (nobody is filling) first removes the temporaries that
match the folder's patterns: their writer is dead, since the kernel releases a lock with its
process. A live worker's file in progress is never removed, however slow its write; the
leftovers of a crash are removed by the next load that finds nobody filling.

The lock may belong to another user (a shared cache that another user's worker created it in):
it is then opened read-only, which ``flock`` takes as well, so every writer still holds it. A
folder this process cannot write (a read-only mount, a pre-filled cache it does not own) is never
swept by it; when the lock cannot be opened there at all (absent, unreadable), it goes without
one: nothing can be written there, by it at least, so a complete cache is read without it, and a
write that is still needed fails with the file system's error.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".fill.lock"
# What creating the folder or opening the lock answers where this process may not write.
READ_ONLY_ERRORS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


@contextmanager
def filling(folder: Path, leftovers: Sequence[str]) -> Iterator[None]:
    """Hold ``folder``'s fill lock (shared) while writing temporaries into it; first, when no
    other process holds it and this process may write ``folder``, remove the entries matching
    the glob patterns ``leftovers`` (relative to ``folder``), which a crashed process left.
    Creates ``folder``. An existing folder this process may not write, whose lock it cannot
    open either, is used without the lock (and nothing is swept)."""
    opened = _open_lock(folder)
    if opened is None:
        yield
        return
    fd, writable = opened
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # others are filling: what matches may be theirs, in progress
        else:
            if writable:
                sweep(folder, leftovers)
        # Converting the lock is not atomic; a sweep that slips in finds none of our files yet.
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_lock(folder: Path) -> tuple[int, bool] | None:
    """The fill lock's file, opened, and whether this process may write ``folder``; None when
    it may not and cannot open the lock either (then it writes nothing there, and needs no
    lock)."""
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if error.errno not in READ_ONLY_ERRORS or not folder.is_dir():
            raise
    # os.access with the effective ids: a read-only mount is not writable for root either.
    writable = os.access(folder, os.W_OK, effective_ids=True)
    if writable:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644), True
        except PermissionError:  # another user's lock file (0644): flock takes a read-only one
            pass
    try:
        return os.open(path, os.O_RDONLY), writable
    except OSError as error:
        if writable or error.errno not in {*READ_ONLY_ERRORS, errno.ENOENT}:
            raise
        log.info("%s is read-only (%s): reading it without its fill lock", folder, error.strerror)
        return None


def sweep(folder: Path, leftovers: Sequence[str]) -> list[Path]:
    """Remove the entries of ``folder`` that match ``leftovers`` (the caller holds the fill
    lock exclusively); returns them."""
    removed: list[Path] = []
    for pattern in leftovers:
        for path in folder.glob(pattern):
            if path.name == LOCK_NAME:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        names = ", ".join(str(p.relative_to(folder)) for p in removed)
        log.warning("removed what interrupted writes left in %s: %s", folder, names)
    return removed
