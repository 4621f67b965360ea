"""The labels as they stand for a reader without the repository lock
(:meth:`fdl.repository.Repository.settled_labels`): never those of a change that is not
acknowledged, whose undo record of ``labels.json`` (:mod:`fdl.repository_files`) is still there."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fdl.repository_files import Labels, has_record, labels_before_change
from fdl.repository_reads import LABELS_FILE, read_labels

# How many times a reader looks again when labels.json changed under its read.
SETTLE_TRIES = 5


def _stamp(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` is and when it last changed (a hard link made to it, or another file
    renamed over it, changes this); None when there is none."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_ctime_ns


def settled_labels(model_dir: Path, recover_if_free: Callable[[], bool]) -> Labels:
    """The labels of ``model_dir`` as they stand for a reader without the lock.

    Without an undo record of ``labels.json`` before and after the read, and with
    ``labels.json`` the same file (inode and change time) before and after, what
    :func:`read_labels` read. With one, ``recover_if_free`` (the lock tried without waiting).
    Free, the writer died: its change is rolled back, as the next holder would (the model
    servers take the config at their next poll). Held (a writer still making its change, or
    about to roll a dead one back), or not to be taken (a read-only repository): the labels
    from before the change, its record's, which stand until it is kept. A record gone by then,
    or a file that changed under the read, means a change was kept or undone meanwhile: read
    again. Raises as :func:`read_labels`.
    """
    path = model_dir / LABELS_FILE
    for _ in range(SETTLE_TRIES):
        stamp = _stamp(path)
        if has_record(model_dir, LABELS_FILE):
            recover_if_free()
            before = labels_before_change(model_dir, LABELS_FILE)
            if before is not None:
                return before
            continue  # kept or undone since: read what stands now
        labels = read_labels(model_dir)
        # A change that began during the read (its record linked, labels.json replaced), or
        # one that was undone during it (labels.json put back), shows in the second look.
        if not has_record(model_dir, LABELS_FILE) and _stamp(path) == stamp:
            return labels
    return read_labels(model_dir)  # changes one after another all along: the latest read
