"""The gateway tests' model repository: tiny contract-conforming models, built once, copied."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fdl import contract
from fdl.repository import sync_config

PHOTO_CLASSES = ["cat", "dog", "bird"]
TRAINING_METADATA = {
    "job_id": "job-abc123",
    "model": "digits",
    "architecture": "mnist_logreg",
    "spec": {"model": "mnist_logreg", "epochs": 1},
    "class_names": [str(i) for i in range(10)],
    "metrics": {"test_accuracy": 0.91, "test_loss": 0.3},
    "history": {"loss": [0.5, 0.3]},
}
# What a model server over this repository serves once it is up: model -> newest version.
SERVED = {"digits": 2, "photos": 1, "promo": 3}


def build_repository(root: Path) -> Path:
    """Tiny contract-conforming models: digits (28x28x1, v1+v2), photos (32x32x3), promo."""
    from harness.models import build_test_model

    build_test_model(root / "digits" / "1", (28, 28, 1), 10, seed=0, model_name="digits")
    build_test_model(root / "digits" / "2", (28, 28, 1), 10, seed=1, model_name="digits")
    (root / "digits" / "2" / contract.METADATA_FILE).write_text(json.dumps(TRAINING_METADATA))
    build_test_model(
        root / "photos" / "1",
        (32, 32, 3),
        3,
        seed=2,
        class_names=PHOTO_CLASSES,
        model_name="photos",
    )
    for version in (1, 2, 3):
        build_test_model(root / "promo" / str(version), (28, 28, 1), 10, seed=version)
    (root / "promo" / "3" / contract.METADATA_FILE).unlink()  # metadata is optional
    sync_config(root)
    return root


def copy_repository(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    sync_config(target)  # base paths point at the copy
    return target
