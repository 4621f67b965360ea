"""Quality gate and publication of a SavedModel as the next integer version, through
:class:`fdl.repository.Repository`, which serialises every writer of the repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fdl import contract
from fdl.jobspec import PublishSpec
from fdl.repository import Repository, find_job_version, list_versions


def published_accuracy(version_dir: Path) -> float | None:
    try:
        metadata = json.loads((version_dir / contract.METADATA_FILE).read_text())
        return float(metadata["metrics"]["test_accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def quality_gate(policy: PublishSpec, accuracy: float, model_path: Path) -> tuple[bool, str]:
    """Whether to publish, and why (the reason goes into the job result)."""
    if accuracy < policy.min_accuracy:
        return False, (
            f"test accuracy {accuracy:.4f} is below publish.min_accuracy {policy.min_accuracy:.4f}"
        )
    reason = f"test accuracy {accuracy:.4f} >= publish.min_accuracy {policy.min_accuracy:.4f}"
    if policy.only_if_better:
        versions = list_versions(model_path)
        if versions:
            latest = versions[-1]
            previous = published_accuracy(model_path / str(latest))
            if previous is not None and accuracy <= previous:
                return False, (
                    f"test accuracy {accuracy:.4f} is not better than the served version "
                    f"{latest} ({previous:.4f}) and publish.only_if_better is set"
                )
            if previous is not None:
                reason += f" and better than the served version {latest} ({previous:.4f})"
        else:
            reason += "; no version published before"
    return True, reason


def staging_dir(model_path: Path, job_id: str) -> Path:
    """A folder beside the versions whose name is not an integer, so servers ignore it."""
    path = model_path / f".tmp-{job_id}"
    shutil.rmtree(path, ignore_errors=True)
    model_path.mkdir(parents=True, exist_ok=True)
    return path


def publish(staged: Path, model_dir: Path, model_name: str, job_id: str) -> tuple[int, bool]:
    """Move ``staged`` in as the next version under the repository lock; idempotent on the job.

    Returns ``(version, published_now)``: a re-run of a job that already published (its record
    was lost, e.g. Redis went away after the rename) finds that version and publishes no other.
    """
    return Repository(model_dir).publish(staged, model_name, job_id)


def published_before(model_dir: Path, model_name: str, job_id: str) -> dict[str, Any] | None:
    """The result of a job that already published a version (a re-run finishes with it)."""
    model_path = model_dir / model_name
    version = find_job_version(model_path, job_id)
    if version is None:
        return None
    try:
        metadata = json.loads((model_path / str(version) / contract.METADATA_FILE).read_text())
    except (OSError, ValueError):
        metadata = {}
    return {
        "model": model_name,
        "version": version,
        "published": True,
        "reason": f"version {version} was published by an earlier run of this job",
        "metrics": metadata.get("metrics") or {},
        "epochs_run": (metadata.get("runtime") or {}).get("epochs_run"),
        "tensorboard_dir": None,
    }
