"""The two files a change of labels writes, ``labels.json`` and ``models.config``: reading the
labels strictly, and putting both files back when a change fails part-way.

A change of labels writes both files (and, when the version must be loaded first, the config
twice). Either both keep the change or both go back to what they were: :class:`UndoPoint`
hard-links each file to a hidden name beside it before the first write, which takes no space on
the disk, and puts a file back by renaming that link over it, which takes none either; so a change
that failed on a full disk (``ENOSPC``) is undone on that same full disk. Where the file system has
no hard links, the file's text is kept in memory and written back instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from fdl.files import atomic_write, fsync_path

log = logging.getLogger(__name__)

Labels = dict[str, dict[str, int]]


class LabelsFileError(ValueError):
    """``labels.json`` is not ``{model: {label: version}}``; nothing may be written over it."""


def parse_labels(path: Path) -> Labels:
    """``{model: {label: version}}`` from ``path`` (absent: no labels). Anything else raises
    :class:`LabelsFileError` naming the file, never a bare ``AttributeError`` or ``TypeError``."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise LabelsFileError(f"{path.name} is not JSON: {error}") from error
    try:
        return {
            model: {label: _version(v) for label, v in labels.items()}
            for model, labels in raw.items()
        }
    except (AttributeError, TypeError, ValueError) as error:
        raise LabelsFileError(f"{path.name} is not {{model: {{label: version}}}}") from error


def _version(value: object) -> int:
    """A version number as ``write_labels`` writes it: an integer (``true`` or 1.5 is none)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{value!r} is not a version number")
    return int(value)


class UndoPoint:
    """The files ``names`` of ``folder`` as they are now (call with the repository lock held)."""

    def __init__(self, folder: Path, names: Sequence[str]) -> None:
        self.folder = folder
        # name -> the hidden link to the old file, its text, or None when it did not exist
        self._saved = {name: self._save(name) for name in names}

    def _save(self, name: str) -> Path | str | None:
        path, backup = self.folder / name, self.folder / f".{name}.undo"
        backup.unlink(missing_ok=True)  # left behind by a process that died mid-change
        try:
            os.link(path, backup)
        except FileNotFoundError:
            return None
        except OSError:  # no hard links on this file system (some FUSE mounts)
            return path.read_text()
        return backup

    def restore(self) -> None:
        """Put every file back as it was (never raises: what fails is logged)."""
        for name, saved in self._saved.items():
            path = self.folder / name
            try:
                if saved is None:
                    path.unlink(missing_ok=True)
                elif isinstance(saved, Path):
                    os.replace(saved, path)
                elif not path.exists() or path.read_text() != saved:
                    atomic_write(path, saved)
            except OSError:
                log.exception("could not put %s back as it was", path)
        try:
            fsync_path(self.folder)
        except OSError:
            log.exception("could not flush %s", self.folder)

    def discard(self) -> None:
        """Keep the change: drop the links."""
        for saved in self._saved.values():
            if isinstance(saved, Path):
                try:
                    saved.unlink(missing_ok=True)
                except OSError:
                    log.warning("could not remove %s", saved)
