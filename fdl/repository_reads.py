"""Reads of the model repository that take no lock: its models, their versions, the job that
published a version, ``labels.json`` and ``.versions.json`` as they are on the disk.

A writer's change of ``labels.json`` is not yet acknowledged while its undo record is beside it:
readers that must not show such a change read the labels through
:meth:`fdl.repository.Repository.settled_labels` instead of :func:`read_labels`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from google.protobuf import text_format

from fdl import contract
from fdl.files import read_small_file
from fdl.model_config import valid_label, valid_name
from fdl.repository_files import Labels, parse_labels
from fdl.wire.tfs_pb2 import ModelConfig, ModelServerConfig

log = logging.getLogger(__name__)

LABELS_FILE = "labels.json"
NUMBERS_FILE = ".versions.json"
_VERSION = re.compile(r"[0-9]{1,18}")


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


def list_versions(model_path: Path) -> list[int]:
    """Published versions of one model, ascending (folders named by ASCII digits only).

    Raises:
        OSError: the model's folder cannot be listed (its permissions, an I/O error): the same
            type (``PermissionError``…), its message naming the model.
    """
    if not model_path.is_dir():
        return []
    try:
        return sorted(
            int(p.name) for p in model_path.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir()
        )
    except FileNotFoundError:
        return []  # removed meanwhile: as if it had not been there
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
    """The version a job already published under ``model_path``, newest first."""
    for version in reversed(list_versions(model_path)):
        if version_job_id(model_path / str(version)) == job_id:
            return version
    return None
