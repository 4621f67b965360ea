"""The two files a change of labels writes, ``labels.json`` and ``models.config``: reading the
labels strictly, and putting both files back when a change fails part-way, even when the process
making it dies (SIGKILL, out of memory, a lost node).

A change of labels writes both files (and, when the version must be loaded first, the config
twice). Either both keep the change or both go back to what they were: :class:`UndoPoint`
records each file before the first write in an undo record beside it, a hard link
``.<name>.undo`` (which takes no space on the disk) or, when there was no such file, an empty
``.<name>.undo-absent``; it puts a file back by renaming that link over it, which takes no space
either, so a change that failed on a full disk (``ENOSPC``) is undone on that same full disk.
Where the file system has no hard links, the link is a copy (the change then needs room for it).

The records stay on the disk until the change is kept or undone, so a process that dies in the
middle leaves them behind, and the next holder of the repository lock rolls the change back with
:func:`roll_back` before it does anything else: the change was never acknowledged. Meanwhile a
reader without the lock takes the labels from the record (:func:`labels_before_change`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from google.protobuf import text_format

from fdl.files import atomic_write, fsync_path
from fdl.model_config import ConfigRenderError, base_path, config_text
from fdl.wire.tfs_pb2 import ModelConfig, ModelServerConfig

log = logging.getLogger(__name__)

Labels = dict[str, dict[str, int]]


class LabelsFileError(ValueError):
    """``labels.json`` is not ``{model: {label: version}}``; nothing may be written over it."""


def parse_labels(path: Path) -> Labels:
    """``{model: {label: version}}`` from ``path`` (absent: no labels). Anything else raises
    :class:`LabelsFileError` naming the file, never a bare ``AttributeError`` or ``TypeError``."""
    try:
        return _labels_from(path)
    except FileNotFoundError:
        return {}


def _labels_from(path: Path) -> Labels:
    """:func:`parse_labels`, with an absent file's ``FileNotFoundError``."""
    try:
        raw = json.loads(path.read_text())
    except ValueError as error:  # UnicodeDecodeError too
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


def with_entries(text: str, entries: Mapping[str, ModelConfig]) -> str:
    """The config ``text`` with ``entries`` (of the config as it was) added as they are, every
    model in name order and on a line of its own, as :func:`fdl.model_config.render` writes."""
    config = text_format.Parse(text, ModelServerConfig())
    listed = config.model_config_list.config
    models: list[ModelConfig] = []
    for entry in sorted([*listed, *entries.values()], key=lambda entry: entry.name):
        models.append(copy := ModelConfig())  # a copy: clearing ``listed`` takes its entries
        copy.CopyFrom(entry)
    del listed[:]
    listed.extend(models)
    return config_text(config)


def kept_entry(entry: ModelConfig, root: str, labels: Mapping[str, int]) -> ModelConfig:
    """The entry of a model whose versions cannot be listed, from its ``entry`` of the config as
    it was: its base path under ``root`` (as :func:`fdl.model_config.render` gives it) and its
    ``labels`` (those of ``labels.json``, which a change may have removed one of, or a rollback
    put back), each label's version added to a ``specific`` policy; the versions it served stay.

    Raises:
        ConfigRenderError: ``labels`` name versions and ``entry`` serves the latest: which
            version that is cannot be known.
    """
    kept = ModelConfig()
    kept.CopyFrom(entry)
    kept.base_path = base_path(root, entry.name)
    if dict(kept.version_labels) == dict(labels):
        return kept
    policy = kept.model_version_policy
    if labels and not policy.HasField("specific"):
        raise ConfigRenderError(
            f"the labels of model {entry.name!r} name versions its entry does not serve, and "
            "which versions it has is not known while its folder cannot be listed"
        )
    if labels:
        versions = set(policy.specific.versions) | set(labels.values())
        del policy.specific.versions[:]
        policy.specific.versions.extend(sorted(versions))
    kept.ClearField("version_labels")
    kept.version_labels.update(labels)
    return kept


def _link(folder: Path, name: str) -> Path:
    return folder / f".{name}.undo"


def _absent(folder: Path, name: str) -> Path:
    return folder / f".{name}.undo-absent"


def has_record(folder: Path, name: str) -> bool:
    """Whether an undo record of ``name`` is in ``folder``."""
    return os.path.lexists(_link(folder, name)) or os.path.lexists(_absent(folder, name))


def labels_before_change(folder: Path, name: str) -> Labels | None:
    """The labels file ``name`` as it was before the change whose undo record is beside it (none
    when there was no such file), or None when there is no record (any more: a change kept or
    undone since the caller saw one). Not readable as labels: :class:`LabelsFileError`."""
    try:
        return _labels_from(_link(folder, name))
    except FileNotFoundError:
        return {} if os.path.lexists(_absent(folder, name)) else None


def put_back(folder: Path, name: str) -> bool:
    """Put ``name`` back as its undo record says it was, and drop the record; whether there was
    one. Each step can be repeated: a process that dies here leaves a record the next one uses."""
    path, link, absent = folder / name, _link(folder, name), _absent(folder, name)
    if os.path.lexists(link):
        os.replace(link, path)
        # A link to the very file (nothing was written over it) is not consumed by the rename.
        link.unlink(missing_ok=True)
        return True
    if os.path.lexists(absent):
        path.unlink(missing_ok=True)
        absent.unlink()
        return True
    return False


def drop_record(folder: Path, name: str) -> None:
    """Keep ``name`` as it is now: remove its undo record, if any."""
    _link(folder, name).unlink(missing_ok=True)
    _absent(folder, name).unlink(missing_ok=True)


def roll_back(folder: Path, labels: str, config: str, render: Callable[[], str]) -> bool:
    """Roll back the change of a process that died holding the repository lock (call with the
    lock held, before anything else); whether there was one.

    ``labels`` is put back from its record. ``config`` is not: it is written again from
    ``render()`` (the labels and the version folders now), whatever its record says. Its record
    may be a worker's publish's, whose version folder was renamed in before the worker died: the
    job reaper then counts the job as published and renders the config with that version
    (``training/publish.py``, ``render_config_again``), and so does this; putting the old config
    back would leave the version out. Where the config cannot be rendered (a ``labels.json``
    that was already corrupt), the config is put back from its record.
    """
    restored = put_back(folder, labels)
    if not restored and not has_record(folder, config):
        return False
    log.warning("rolling back a change of %s left half made by a process that died", folder)
    try:
        text = render()
    except ValueError:  # LabelsFileError, ConfigRenderError
        log.exception("the config cannot be rendered: putting back its copy from the change")
        put_back(folder, config)
    else:
        path = folder / config
        if not path.exists() or path.read_text() != text:
            atomic_write(path, text)
        drop_record(folder, config)
    fsync_path(folder)
    return True


class UndoPoint:
    """The files ``names`` of ``folder`` as they are now (call with the repository lock held).

    :meth:`discard` drops the records in the order of ``names``, and dropping the first one is
    the point where the change stands: a process that dies before it has its change rolled back
    by :func:`roll_back`; one that dies after it leaves at most the records of the other names,
    for which :func:`roll_back` only renders the config again from the labels the change wrote
    (no change). So ``labels.json`` comes first.
    """

    def __init__(self, folder: Path, names: Sequence[str]) -> None:
        self.folder = folder
        self.names = list(names)
        done: list[str] = []
        try:
            for name in self.names:
                self._save(name)
                done.append(name)
        except BaseException:
            for name in done:  # nothing was written: the records go, no file changed
                drop_record(folder, name)
            raise

    def _save(self, name: str) -> None:
        path, link = self.folder / name, _link(self.folder, name)
        # A record left by a dead process is rolled back by whoever took the lock before this
        # (roll_back); were one still here, os.link fails (FileExistsError) rather than lose it.
        try:
            os.link(path, link)
        except FileNotFoundError:
            if path.exists():
                raise
            fd = os.open(_absent(self.folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (some FUSE mounts, another user's file): a copy
            atomic_write(link, path.read_text())

    def restore(self) -> None:
        """Put every file back as it was and drop the records (never raises: what fails is
        logged, and its record is left for the next holder of the lock)."""
        for name in self.names:
            try:
                put_back(self.folder, name)
            except OSError:
                log.exception("could not put %s back as it was", self.folder / name)
        try:
            fsync_path(self.folder)
        except OSError:
            log.exception("could not flush %s", self.folder)

    def discard(self) -> None:
        """Keep the change: drop the records, the first name's first (see the class).

        Raises:
            OSError: the first record could not be dropped; the change does not stand, and the
                caller undoes it (:meth:`restore`). The others' failures are only logged.
        """
        for index, name in enumerate(self.names):
            try:
                drop_record(self.folder, name)
            except OSError:
                if index == 0:
                    raise
                log.warning("could not remove the undo record of %s", self.folder / name)
        try:
            # The change is acknowledged after this: a record that came back after a power loss
            # would roll it back.
            fsync_path(self.folder)
        except OSError:
            log.warning("could not flush %s after keeping a change", self.folder)
