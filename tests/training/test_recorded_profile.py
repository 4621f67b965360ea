"""A published version records the gateway's preprocessing profile it was trained for: ``digit``
for MNIST (a real worker's job), ``photo`` for CIFAR-10 and image folders
(``tests/api/test_folder_serving.py`` serves a published image-folder version)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fdl import contract
from training.artifacts import serving_profile


def test_an_mnist_version_records_the_digit_profile(published_logreg: dict[str, Any]) -> None:
    path: Path = published_logreg["path"]
    metadata = json.loads((path / contract.METADATA_FILE).read_text())
    assert metadata[contract.PROFILE_KEY] == contract.DIGIT_PROFILE


def test_cifar_and_image_folders_are_photos() -> None:
    assert serving_profile("cifar10") == contract.PHOTO_PROFILE
    assert serving_profile("my-digits") == contract.PHOTO_PROFILE  # whatever its channels
