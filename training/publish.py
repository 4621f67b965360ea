"""Quality gate and atomic publication of a SavedModel as the next integer version."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fdl import contract
from fdl.jobspec import PublishSpec
from fdl.model_config import list_versions, sync_config


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


def publish_version(staged: Path, model_path: Path, attempts: int = 50) -> int:
    """Rename ``staged`` to the next free integer version (atomic on one filesystem)."""
    for _ in range(attempts):
        versions = list_versions(model_path)
        version = (versions[-1] + 1) if versions else 1
        target = model_path / str(version)
        if target.exists():
            continue
        try:
            os.rename(staged, target)
        except OSError:
            if target.exists():  # another job took this number first
                continue
            raise
        return version
    raise RuntimeError(f"could not find a free version number under {model_path}")


def publish(staged: Path, model_dir: Path, model_name: str) -> int:
    version = publish_version(staged, model_dir / model_name)
    sync_config(model_dir)
    return version
