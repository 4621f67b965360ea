"""The model repository on disk: version folders, version policies, change fingerprints."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from tensorflow_serving.config import file_system_storage_path_source_pb2

from fdl import contract

Policy = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
Fingerprint = tuple[tuple[str, int, int], ...]
_VERSION_NAME = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)[ \t\n\v\f\r]*")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
log = logging.getLogger("serving.manager")


def version_number(name: str) -> int | None:
    """The version a child of the base path names, as TF Serving reads it (``absl::SimpleAtoi``
    in ``ParseVersionNumber``): ASCII digits with an optional sign and ASCII whitespace around
    them, within int64 (``00012`` is 12, ``-1`` is -1); None for any other name, so a folder
    such as ``²`` or ``١٢`` (digits to ``str.isdigit``) or one beyond int64 is not a version."""
    match = _VERSION_NAME.fullmatch(name)
    if match is None:
        return None
    number = int(match.group(1))
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def scan_versions(base_path: Path) -> dict[int, Path]:
    """Version-named folders holding a SavedModel file; anything else is ignored.

    Two names of one version (``12`` and ``012``): the last in byte order is used, as TF
    Serving's ``IndexChildrenByVersion`` does, with its warning. A version folder whose
    contents cannot be checked (a permission error) counts as a version, as TF Serving aspires
    every version-named child without looking inside: its load then fails with the reason,
    which ``GetModelStatus`` reports, and the model's other versions keep being polled.

    Raises:
        OSError: the base path cannot be listed (missing, moved away for a moment, unreadable).
            It is not an empty list: callers keep the model's versions, as TF Serving's
            ``PollFileSystemForServable`` refuses to emit an empty version list for a base path
            it cannot find (``file_system_storage_path_source.cc``).
    """
    names = sorted(os.listdir(base_path), key=os.fsencode)
    found: dict[int, Path] = {}
    for name in names:
        number = version_number(name)
        if number is None:
            continue
        child = base_path / name
        try:
            if not (child.is_dir() and any((child / f).is_file() for f in contract.GRAPH_FILES)):
                continue
        except OSError:
            pass  # not readable to us: its load says why (logged, and in GetModelStatus)
        if number in found:
            log.warning(
                "Duplicate version directories detected. Version %d will be loaded from %s, "
                "%s will be ignored.", number, name, found[number].name,
            )  # fmt: skip
        found[number] = child
    return found


def aspired_versions(policy: Policy, on_disk: dict[int, Path]) -> set[int]:
    """TF Serving's servable version policy; the default is ``latest { num_versions: 1 }``."""
    present = sorted(on_disk)
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(present)
    if kind == "specific":
        return set(policy.specific.versions) & set(present)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
    return set(present[-count:])


def fingerprint(path: Path) -> Fingerprint:
    """Names, sizes and mtimes of every file under a version folder."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))
