"""The model repository as the gateway sees it: folders, versions, metadata, labels, status."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import grpc

from api.repository_access import io
from api.serving_client import ServingClient, VersionStatus
from fdl import contract
from fdl.files import read_small_file
from fdl.repository import Repository
from fdl.repository_reads import discover_models, version_dir, version_paths

# Metadata keys shown with each version (the rest, e.g. the training history, stays on disk).
_SHOWN = ("architecture", "spec", "dataset", "created_at", "input", "tensorflow_version")
# An absolute POSIX or Windows path (no whitespace): how the worker records where data came from.
_ABSOLUTE_PATH = re.compile(r"^(?:/|[A-Za-z]:[\\/]|\\\\)\S*$")
METADATA_MAX_BYTES = contract.METADATA_MAX_BYTES
# The state of a version whose folder the gateway cannot look into (its permissions, an I/O
# error) and that the model server does not report: nothing it could load.
UNREADABLE = "UNREADABLE"


def public_paths(value: Any) -> Any:
    """A copy of metadata with each absolute path cut to its last component (``/srv/data/mnist``
    becomes ``mnist``): anyone may read it, and the worker's folders are nobody's business."""
    if isinstance(value, dict):
        return {key: public_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [public_paths(item) for item in value]
    if isinstance(value, str) and _ABSOLUTE_PATH.match(value):
        path = PurePosixPath(value) if value.startswith("/") else PureWindowsPath(value)
        return path.name or "."
    return value


def read_version_metadata(
    model_dir: Path, model: str, version: int, folder: Path | None = None
) -> dict[str, Any] | None:
    """``<version>/assets.extra/metadata.json``, or None when absent or unreadable: not a
    regular file (a FIFO, a device: never opened for reading, never waited on), larger than
    :data:`METADATA_MAX_BYTES`, or not a JSON object. A symlink is followed to the file it names,
    as the model server follows the version's other files. The version's folder is ``folder``
    when the caller has it (from :func:`version_paths`), else the one the model server loads it
    from (``05`` for 5: :func:`fdl.repository_reads.version_dir`, a few stats: call it from a
    worker thread)."""
    if folder is None:
        folder = version_dir(model_dir / model, version)
    path = folder / contract.METADATA_FILE
    data = read_small_file(path, METADATA_MAX_BYTES)
    if data is None:
        return None
    try:
        metadata = json.loads(data)
    except (ValueError, RecursionError, MemoryError):  # RecursionError: JSON nested too deep
        return None
    return metadata if isinstance(metadata, dict) else None


def recorded_profile(model_dir: Path, model: str, version: int) -> str | None:
    """The preprocessing profile a version was trained for, as its ``metadata.json`` records it
    (``digit`` or ``photo``); for versions published before profiles were recorded, the one its
    recorded dataset implies (``mnist``: ``digit``; any other, CIFAR-10 or an image folder:
    ``photo``, as training/artifacts.py records it now). None when it records neither or cannot
    be read (the gateway then chooses by channel count)."""
    metadata = read_version_metadata(model_dir, model, version)
    if metadata is None:
        return None
    profile = metadata.get(contract.PROFILE_KEY)
    if isinstance(profile, str) and profile in contract.PROFILES:
        return profile
    dataset = metadata.get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else None
    if not isinstance(name, str) or not name:
        return None
    return contract.DIGIT_PROFILE if name == "mnist" else contract.PHOTO_PROFILE


def safe_labels(repository: Repository) -> dict[str, dict[str, int]]:
    """The labels that stand (never a change not acknowledged yet, such as one a killed gateway
    left half made: :meth:`fdl.repository.Repository.settled_labels`); none when unreadable."""
    try:
        return repository.settled_labels()
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


async def served_status(
    client: ServingClient, model: str, request_id: str | None
) -> tuple[list[VersionStatus], str | None]:
    """The model server's view; an unserved model is an empty list, a failure an error text."""
    try:
        return await client.model_status(model, request_id), None
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return [], None
        return [], f"{error.code().name}: {error.details()}"


def describe_version(
    model_dir: Path,
    model: str,
    version: int,
    status: VersionStatus | None,
    labels: list[str],
    folder: Path | None = None,
) -> dict[str, Any]:
    """One version as the model routes show it; ``folder``: as :func:`read_version_metadata`."""
    metadata = read_version_metadata(model_dir, model, version, folder) or {}
    class_names = metadata.get("class_names") or metadata.get("classes")
    metrics = metadata.get("metrics")
    return {
        "version": version,
        "state": status.state if status else "NOT_LOADED",
        "error": (status.error_message or None) if status else None,
        "labels": labels,
        # Text, as workers write it; anything else (a file edited by hand) is shown as no job.
        "job_id": job_id if isinstance(job_id := metadata.get("job_id"), str) else None,
        "metrics": metrics if isinstance(metrics, dict) else None,
        "class_names": [str(c) for c in class_names] if isinstance(class_names, list) else None,
        "metadata": public_paths({k: metadata[k] for k in _SHOWN if k in metadata}) or None,
    }


async def describe_model(
    client: ServingClient,
    repository: Repository,
    model: str,
    request_id: str | None,
    all_labels: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """One model as the model routes show it; ``all_labels``: :func:`safe_labels`, read once
    for a listing of many (by default read here)."""
    model_dir = repository.model_dir
    statuses, server_error = await served_status(client, model, request_id)
    by_version = {s.version: s for s in statuses}
    if all_labels is None:
        # In a worker thread: with a change's undo record there, this may roll it back.
        all_labels = await io(safe_labels, repository)
    labels = all_labels.get(model, {})
    # In a worker thread: a model folder of thousands of entries takes a scan of them all.
    on_disk, graphs, unreadable, folder_error = await asyncio.to_thread(_on_disk, model_dir / model)
    versions = sorted(set(on_disk) | set(by_version))
    coming = pending_version(graphs, by_version, server_error)
    described = []
    for v in versions:
        names = sorted(label for label, target in labels.items() if target == v)
        # The folder the listing found (``05`` for 5); one the server alone reports: its name.
        folder = on_disk.get(v, model_dir / model / str(v))
        version = describe_version(model_dir, model, v, by_version.get(v), names, folder)
        version["pending"] = v == coming
        if v in unreadable:
            if v not in by_version:
                version["state"] = UNREADABLE
            version["error"] = "; ".join(filter(None, (unreadable[v], version["error"])))
        described.append(version)
    return {
        "name": model,
        "labels": labels,
        "versions": described,
        "server_error": server_error,
        "repository_error": folder_error,
    }


def _on_disk(
    model_path: Path,
) -> tuple[dict[int, Path], list[int], dict[int, str], str | None]:
    """A model's versions on disk as the model server takes them, each with the folder it is
    loaded from (a folder without a graph, being copied in or left empty, is none: not listed;
    :func:`version_paths`), those of them holding a graph, those the gateway cannot look into
    (listed, shown UNREADABLE unless served, never a failure) with why, as the listing found
    them (no second stat), and why the model's folder cannot be listed (then only the versions
    the model server reports can be shown)."""
    errors: dict[Path, OSError] = {}
    try:
        folders = version_paths(model_path, errors)
    except OSError as error:
        return {}, [], {}, _reason(error)  # names the model's folder
    graphs, unreadable = [], {}
    for v, folder in sorted(folders.items()):
        if (failure := errors.get(folder)) is None:
            graphs.append(v)
        else:
            unreadable[v] = f"{_reason(failure)}: the version's folder cannot be read"
    return folders, graphs, unreadable, None


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def pending_version(
    on_disk: list[int], by_version: dict[int, VersionStatus], server_error: str | None
) -> int | None:
    """The version the model server has yet to pick up, if any: the newest on disk when the
    server (which answered) reports no state for it and none for a newer one. The server serves
    the newest version, so it loads it at its next poll of the file system or the config
    (published a moment ago); an older version it reports nothing for is retired (kept on disk,
    not served). Its state stays NOT_LOADED, as the server's view is; ``pending`` says which."""
    if server_error is not None or not on_disk:
        return None  # no answer from the server: nothing is known of its view
    newest = on_disk[-1]
    if newest in by_version or any(known > newest for known in by_version):
        return None
    return newest


def model_names(model_dir: Path) -> list[str]:
    return discover_models(model_dir)
