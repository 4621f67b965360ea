"""``publish.only_if_better`` compares test accuracies of versions of one kind only: a served
version trained on another dataset, for other classes or another input is not comparable, and
the gate says no naming the difference. Before, a 2-class image-folder model was published over
a 10-class MNIST model of the same name, "better than the served version" on a test set of its
own. Without ``only_if_better`` the name is the user's to reuse, as before.

Real Redis, real TensorFlow (tiny runs), real files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fdl import contract
from fdl.jobs import JobStore
from fdl.jobspec import PublishSpec
from tests.training.spec_runs import run_spec, settings_for
from tests.training.stores import store_on_db
from training.data.registry import load_dataset
from training.model_kind import ModelKind
from training.publish import quality_gate

DB = 14
SMALL: dict[str, Any] = {
    "model": "mnist_logreg", "epochs": 1, "batch_size": 8, "validation_split": 0,
    "max_test_examples": 64, "publish_as": "m",
    "optimizer": {"name": "sgd", "learning_rate": 0.5},
}  # fmt: skip


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


def two_classes(root: Path) -> None:
    """An easy image-folder dataset: 28x28 images bright on the left or on the right half."""
    for split, count in (("train", 32), ("test", 4)):
        for cls, box in (("left", (0, 0, 13, 27)), ("right", (14, 0, 27, 27))):
            (root / split / cls).mkdir(parents=True)
            for index in range(count):
                image = Image.new("L", (28, 28), index % 5)
                image.paste(230 + index % 7, box)
                image.save(root / split / cls / f"{index}.png")


def test_only_if_better_publishes_nothing_over_a_version_of_another_kind(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "mnist").symlink_to(data_dir / "mnist", target_is_directory=True)
    two_classes(data / "shades")
    settings = settings_for(data, tmp_path)
    served, _ = run_spec(store, "mnist", settings, max_train_examples=256, **SMALL)
    assert served is not None and served["version"] == 1
    assert served["metrics"]["test_accuracy"] < 1.0

    gate = {"only_if_better": True}
    shades = {**SMALL, "dataset": "shades", "optimizer": {"name": "sgd", "learning_rate": 0.01}}
    result, record = run_spec(store, "shades", settings, publish=gate, **shades)
    assert record["status"] == "succeeded", record.get("error")
    assert result is not None and result["metrics"]["test_accuracy"] == 1.0  # "better"
    assert not result["published"] and result["version"] is None
    assert result["reason"] == (
        "the served version 1 is not comparable: it was trained on dataset 'mnist', this job "
        "on 'shades'; its classes are 10 (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), this job's 2 (left, "
        "right); publish.only_if_better is set, so nothing was published (publish under "
        "another name, or without only_if_better)"
    )
    assert sorted(p.name for p in (settings.model_dir / "m").iterdir()) == ["1"]

    # The contract's input is compared too; a version of the same kind is compared as ever.
    mnist = load_dataset("mnist", (28, 28, 1), data, tmp_path / "var", allow_download=False)
    mnist_kind = ModelKind.of(mnist.capped(None, 64), (28, 28, 1))
    other_input = replace(mnist_kind, input_shape=(-1, 32, 32, 3))
    policy, model_path = PublishSpec(only_if_better=True), settings.model_dir / "m"
    passed, reason = quality_gate(policy, 0.99, model_path, other_input)
    assert not passed
    assert reason.startswith(
        "the served version 1 is not comparable: its input is uint8 [-1, 28, 28, 1], this "
        "job's uint8 [-1, 32, 32, 3]; "
    )
    passed, reason = quality_gate(policy, 0.99, model_path, mnist_kind)
    assert passed and reason.endswith(
        f"and better than the served version 1 ({served['metrics']['test_accuracy']:.4f})"
    )

    # So is the test set: its metadata records its size, layout and fingerprint. A job of the
    # same kind tested on one image (1.0) is not "better" than a version tested on 64, nor one
    # tested on 64 other images.
    dataset = json.loads((model_path / "1" / contract.METADATA_FILE).read_text())["dataset"]
    assert (dataset["name"], dataset["layout"], dataset["test"]) == ("mnist", "idx", 64)
    assert dataset["test_sha256"] == mnist_kind.test_sha256
    other_images = replace(mnist_kind, test_sha256=mnist.capped(None, 65).test_sha256)
    passed, reason = quality_gate(policy, 0.99, model_path, other_images)
    assert not passed and reason.startswith(
        "the served version 1 is not comparable: its 64 test images are not this job's (the "
        "same number, stored the same way, but other pixels, labels or order: "
    ), reason
    one_image = ModelKind.of(mnist.capped(None, 1), (28, 28, 1))
    passed, reason = quality_gate(policy, 1.0, model_path, one_image)
    assert (passed, reason) == (
        False,
        "the served version 1 is not comparable: it was tested on 64 images, this job on 1 "
        "(max_test_examples, or the dataset's test images, differ); publish.only_if_better is "
        "set, so nothing was published (publish under another name, or without "
        "only_if_better)",
    )

    # Without only_if_better, the user's choice of name stands.
    result, _ = run_spec(store, "shades-anyway", settings, **shades)
    assert result is not None and result["published"] and result["version"] == 2
