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
from pathlib import Path

from fdl import contract
from fdl.files import read_small_file
from fdl.model_config import valid_name
from fdl.repository_files import Labels, parse_labels

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
    """Published versions of one model, ascending (folders named by ASCII digits only)."""
    if not model_path.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_path.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir()
    )


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
