"""The model repository on disk: version folders, version policies, change fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

from tensorflow_serving.config import file_system_storage_path_source_pb2

Policy = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
Fingerprint = tuple[tuple[str, int, int], ...]
_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def scan_versions(base_path: Path) -> dict[int, Path]:
    """Integer-named folders holding a SavedModel file; anything else is ignored.

    Raises:
        OSError: the base path cannot be listed (missing, moved away for a moment, unreadable).
            It is not an empty list: callers keep the model's versions, as TF Serving's
            ``PollFileSystemForServable`` refuses to emit an empty version list for a base path
            it cannot find (``file_system_storage_path_source.cc``).
    """
    children = list(base_path.iterdir())
    found = {}
    for child in children:
        if (
            child.name.isdigit()
            and child.is_dir()
            and any((child / name).is_file() for name in _MODEL_FILES)
        ):
            found[int(child.name)] = child
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
