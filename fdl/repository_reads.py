"""Reads of the model repository that take no lock: its models, their versions, the job that
published a version, ``labels.json`` and ``.versions.json`` as they are on the disk.

A writer's change of ``labels.json`` is not yet acknowledged while its undo record is beside it:
readers that must not show such a change read the labels through
:meth:`fdl.repository.Repository.settled_labels` instead of :func:`read_labels`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from google.protobuf import text_format

from fdl import contract
from fdl.files import read_small_file
from fdl.model_config import valid_label, valid_name
from fdl.repository_files import Labels, parse_labels
from fdl.wire.tfs_pb2 import ModelConfig, ModelServerConfig

log = logging.getLogger(__name__)
_Listing = TypeVar("_Listing", list[int], dict[int, Path])

LABELS_FILE = "labels.json"
NUMBERS_FILE = ".versions.json"
# A name a publish's ``str(version)`` could collide with (see :func:`numbered_names`).
_NUMBER_NAME = re.compile(r"[0-9]{1,18}")
# What ``Path.is_file`` takes for "no such file" rather than an error.
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})
_GRAPH_NAMES = tuple(os.sep + name for name in contract.GRAPH_FILES)


def discover_models(model_dir: Path) -> list[str]:
    """Folders whose name is a valid model name; others (e.g. ``evil\\n``) are skipped."""
    if not model_dir.is_dir():
        return []
    names = []
    for path in model_dir.iterdir():
        if not path.is_dir() or path.name.startswith("."):
            continue
        if valid_name(path.name):
            names.append(path.name)
        else:
            log.warning("skipping folder %r in the model repository: not a model name", path.name)
    return sorted(names)


def version_number(name: str) -> int | None:
    """The version a child of a model's folder names for the gateway and training: ASCII digits
    only, at most 18 (``00012`` is 12), the names a publish writes; None for any other name.
    The model server also reads a sign and whitespace around the digits, as TF Serving does
    (``serving/versions.py``); such names, which no publish writes, are no version here: a
    negative one could not be labelled, a 19-digit one would push publishes past int64."""
    return int(name) if _NUMBER_NAME.fullmatch(name) else None


def _mode(path: str | os.PathLike[str]) -> int:
    """``st_mode`` of ``path``, a symlink followed; 0 where ``Path.is_dir`` and ``is_file`` (the
    model server's) take it as absent: ENOENT, ENOTDIR, EBADF, ELOOP (a symlink loop).

    Raises:
        OSError: any other error (``PermissionError``…): it cannot be looked into.
    """
    try:
        return os.stat(path).st_mode
    except OSError as error:
        if error.errno in _ABSENT:
            return 0
        raise


def holds_graph(folder: str | os.PathLike[str]) -> bool:
    """Whether a version folder holds a SavedModel graph (a regular file of
    :data:`fdl.contract.GRAPH_FILES`, a symlink followed): a stat per name, none opened.
    Raises as :func:`_mode` (the folder cannot be looked into); absent is False."""
    path = os.fspath(folder)
    return any(stat.S_ISREG(_mode(path + name)) for name in _GRAPH_NAMES)


def is_version_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether a version-named child of a model's folder is a version, as to the model server
    (``serving/versions.py:scan_versions``): a folder (a symlink followed) holding a graph;
    absent, a dangling symlink or a loop (ELOOP), not a folder: False, as ``Path.is_dir`` says.
    Raises ``OSError`` where it cannot be looked into (a ``PermissionError``: it, or a symlink
    into a folder closed to us): counted as a version then, as the model server counts it.
    The one rule of :func:`version_folders` and :func:`version_dir`."""
    return stat.S_ISDIR(_mode(folder)) and holds_graph(folder)


def version_folders(
    base_path: Path, unreadable: dict[Path, OSError] | None = None
) -> list[tuple[int, Path]]:
    """The children of a model's folder that are versions to the gateway and training (every
    reader here), in byte order of their names: a name :func:`version_number` reads, a folder
    holding a graph (:func:`is_version_folder`), as the model server also requires. One whose
    contents cannot be checked (a permission error) counts, as TF Serving aspires every
    version-named child without looking inside; an empty or half-copied folder does not.

    Cost: one ``scandir`` of ``base_path``, and for each version-named child a ``stat`` and one
    per graph file name until one is found (three for an empty folder), nothing opened (20,000
    empty folders: 0.3-0.5 s on a loaded 2-CPU VM). Nothing caps the entries examined: a cap
    would hide versions past it, and neither TF Serving nor the model server has one.

    ``unreadable``, when given, receives each listed folder whose contents could not be
    checked, with the error, so that a caller need not stat it again to learn which.

    Raises:
        OSError: ``base_path`` cannot be listed (missing, unreadable).
    """
    found = []
    with os.scandir(base_path) as listing:
        for entry in listing:
            number = version_number(entry.name)
            if number is None:
                continue
            try:
                if not is_version_folder(entry.path):
                    continue
            except OSError as error:
                # Not readable to us: the model server's load says why.
                if unreadable is not None:
                    unreadable[base_path / entry.name] = error
            found.append((number, entry.name))
    found.sort(key=lambda item: os.fsencode(item[1]))
    return [(number, base_path / name) for number, name in found]


def list_versions(model_path: Path) -> list[int]:
    """Versions of one model, ascending: the numbers of :func:`version_folders`, so a folder
    the model server would not load (empty, still being copied in) is none.

    Raises:
        OSError: the model's folder cannot be listed (its permissions, an I/O error): the same
            type (``PermissionError``…), its message naming the model.
    """
    return sorted(version_paths(model_path))


def version_paths(
    model_path: Path, unreadable: dict[Path, OSError] | None = None
) -> dict[int, Path]:
    """Each version of :func:`list_versions` and the folder the model server loads it from (of
    two names of one version, ``5`` and ``05``, the last in byte order). Raises as it does;
    ``unreadable`` as :func:`version_folders`'."""
    return _listed(model_path, lambda: dict(version_folders(model_path, unreadable)), {})


def version_dir(model_path: Path, version: int) -> Path:
    """The folder the model server loads one version from, as :func:`version_paths` would name
    it, without listing the model's folder: of the names that spell ``version`` (``5``, ``05``,
    … up to 18 digits) the last in byte order that :func:`is_version_folder` counts. When none
    does (no such version, or a folder without a graph), the name a publish writes,
    ``str(version)``, so that a reader finds what it found before versions could be padded.

    Cost: a ``stat`` per candidate name, and one per graph file name for a folder, none
    opened: 18 for a version with no folder at all, two for a version in its plain folder.
    """
    digits = str(version)
    if version >= 0 and len(digits) <= 18:
        # ASCII digits: str order is byte order; the last in byte order is tried first.
        for name in sorted((digits.zfill(width) for width in range(len(digits), 19)), reverse=True):
            folder = model_path / name
            try:
                if is_version_folder(folder):
                    return folder
            except OSError:
                if os.path.lexists(folder):  # not a name in a model folder we may not search
                    return folder
    return model_path / digits


def numbered_names(model_path: Path) -> list[int]:
    """The numbers the names of a model's children spell in ASCII digits, whatever they are (an
    empty or half-copied folder, a file), ascending: numbers a publish must not give a new
    version, whose rename onto such a name would fail (or replace it). Raises as
    :func:`list_versions`."""
    return _listed(
        model_path,
        lambda: sorted(int(n) for n in os.listdir(model_path) if _NUMBER_NAME.fullmatch(n)),
        [],
    )


def _listed(model_path: Path, read: Callable[[], _Listing], none: _Listing) -> _Listing:
    if not model_path.is_dir():
        return none
    try:
        return read()
    except FileNotFoundError:
        return none  # removed meanwhile: as if it had not been there
    except OSError as error:
        reason = error.strerror or type(error).__name__
        problem = f"{reason}: the folder of model {model_path.name!r} cannot be listed"
        raise type(error)(error.errno, problem, str(model_path)) from error


def versions_of(
    model_dir: Path, names: Iterable[str]
) -> tuple[dict[str, list[int]], dict[str, OSError]]:
    """Each model's versions (:func:`list_versions`) and, apart, the error of each model whose
    folder cannot be listed: one such folder never stops the others being read."""
    versions: dict[str, list[int]] = {}
    unreadable: dict[str, OSError] = {}
    for name in names:
        try:
            versions[name] = list_versions(model_dir / name)
        except OSError as error:
            unreadable[name] = error
    return versions, unreadable


def config_entries(config_path: Path) -> dict[str, ModelConfig]:
    """The models of ``models.config`` as it is now, by name; none when it is absent, cannot be
    read or does not parse (logged)."""
    try:
        config = text_format.Parse(config_path.read_text(), ModelServerConfig())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, text_format.ParseError) as error:
        log.warning("%s cannot be read as a model config: %s", config_path, error)
        return {}
    return {entry.name: entry for entry in config.model_config_list.config}


def servable_labels(labels: Labels, models: Mapping[str, Sequence[int]]) -> Labels:
    """Labels of ``models``; a stored label that is not a valid name (written before names
    were checked in full) is left out with a warning rather than stopping every later write."""
    kept: Labels = {}
    for model, model_labels in labels.items():
        if model not in models:
            continue
        kept[model] = {}
        for label, version in model_labels.items():
            if valid_label(label):
                kept[model][label] = version
            else:
                log.warning("label %r of model %s in labels.json is not a valid name", label, model)
    return kept


def read_labels(model_dir: Path) -> Labels:
    """``labels.json`` (absent: none); not readable as labels: ``LabelsFileError``."""
    return parse_labels(model_dir / LABELS_FILE)


class NumbersFileError(ValueError):
    """``.versions.json`` cannot be read as ``{model: number}``: nothing is published over it,
    since rewriting it would forget the numbers of other models' deleted versions."""


def read_numbers(model_dir: Path) -> dict[str, int]:
    """Each model's highest version number ever published (``.versions.json``; absent: none).

    Raises:
        NumbersFileError: the file is unreadable or not ``{model: number}``.
    """
    path = model_dir / NUMBERS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise NumbersFileError(f"{path} cannot be read ({error}); {_NUMBERS_FIX}") from error
    if not isinstance(raw, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in raw.values()
    ):
        raise NumbersFileError(f"{path} is not {{model: number}}; {_NUMBERS_FIX}")
    return raw


_NUMBERS_FIX = (
    "fix it, or remove it to publish again (the numbers of deleted versions may then be reused)"
)


def version_job_id(version_dir: Path) -> str | None:
    """The training job that published a version (``job_id`` in its metadata), if recorded; read
    as the gateway reads metadata (a regular file of at most 1 MiB, never a FIFO waited on)."""
    data = read_small_file(version_dir / contract.METADATA_FILE, contract.METADATA_MAX_BYTES)
    try:
        metadata = json.loads(data) if data is not None else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        return None
    job_id = metadata.get("job_id") if isinstance(metadata, dict) else None
    return str(job_id) if job_id else None


def find_job_version(model_path: Path, job_id: str) -> int | None:
    """The version a job already published under ``model_path``, newest first (each read from
    the folder the model server loads it from: :func:`version_paths`)."""
    for version, folder in sorted(version_paths(model_path).items(), reverse=True):
        if version_job_id(folder) == job_id:
            return version
    return None
