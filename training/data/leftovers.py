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
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".fill.lock"


@contextmanager
def filling(folder: Path, leftovers: Sequence[str]) -> Iterator[None]:
    """Hold ``folder``'s fill lock (shared) while writing temporaries into it; first, when no
    other process holds it, remove the entries matching the glob patterns ``leftovers``
    (relative to ``folder``), which a crashed process left. Creates ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # others are filling: what matches may be theirs, in progress
        else:
            sweep(folder, leftovers)
        # Converting the lock is not atomic; a sweep that slips in finds none of our files yet.
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


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
