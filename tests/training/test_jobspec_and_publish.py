"""Bad job specs are rejected with messages naming the field; the quality gate and the atomic
version numbering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from fdl import contract
from fdl.jobspec import JobSpec, PublishSpec
from fdl.repository_reads import list_versions
from training.publish import publish, published_before, quality_gate, staging_dir


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"model": "resnet"}, "model"),
        ({"model": "mnist_cnn", "epochs": 0}, "epochs"),
        ({"model": "mnist_cnn", "batch_size": 100_000}, "batch_size"),
        ({"model": "mnist_cnn", "optimizer": {"name": "lbfgs"}}, "optimizer.name"),
        ({"model": "mnist_cnn", "optimizer": {"learning_rate": -1}}, "learning_rate"),
        ({"model": "mnist_cnn", "regularization": {"dropout": 1.0}}, "dropout"),
        ({"model": "mnist_cnn", "publish_as": "../etc"}, "publish_as"),
        ({"model": "mnist_cnn", "dataset": "a/b"}, "dataset"),
        ({"model": "mnist_cnn", "dataset": "cifar10"}, "does not fit"),
        ({"model": "mnist_mlp", "augment": True}, "augment"),
        ({"model": "mnist_mlp", "validation_split": 0, "early_stopping": {}}, "early_stopping"),
        ({"model": "mnist_mlp", "learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_bad_specs_are_rejected(spec: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(spec)
    assert fragment in str(error.value)


def test_spec_defaults() -> None:
    cifar = JobSpec(model="cifar10_cnn_bn")
    assert (cifar.dataset, cifar.publish_as, cifar.augment) == ("cifar10", "cifar10_cnn_bn", True)
    mnist = JobSpec(model="mnist_logreg")
    assert (mnist.dataset, mnist.augment, mnist.validation_split) == ("mnist", False, 5000)


def _version(model_path: Path, version: int, accuracy: float) -> None:
    folder = model_path / str(version) / contract.ASSETS_EXTRA_DIR
    folder.mkdir(parents=True)
    (model_path / str(version) / "saved_model.pb").write_bytes(b"x")  # a version holds a graph
    (model_path / str(version) / contract.METADATA_FILE).write_text(
        json.dumps({"metrics": {"test_accuracy": accuracy}})
    )


def test_quality_gate(tmp_path: Path) -> None:
    path = tmp_path / "m"
    assert quality_gate(PublishSpec(min_accuracy=0.9), 0.95, path)[0] is True
    ok, why = quality_gate(PublishSpec(min_accuracy=0.9), 0.85, path)
    assert not ok and "0.8500 is below publish.min_accuracy 0.9000" in why
    better = PublishSpec(only_if_better=True)
    assert quality_gate(better, 0.5, path) == (
        True,
        "test accuracy 0.5000 >= publish.min_accuracy 0.0000; no version published before",
    )
    _version(path, 1, 0.97)
    _version(path, 2, 0.90)
    ok, why = quality_gate(better, 0.90, path)
    assert not ok and "served version 2 (0.9000)" in why
    ok, why = quality_gate(better, 0.93, path)
    assert ok and "better than the served version 2" in why


def test_the_gate_and_a_rerun_read_a_padded_version_from_its_folder(tmp_path: Path) -> None:
    """A version the model server loads from ``05/`` (copied in by hand): the gate compares
    with its metrics and a re-run of its job finishes with them, not with none from ``5/``."""
    model_dir = tmp_path / "models"
    padded = model_dir / "m" / "05"
    (padded / contract.ASSETS_EXTRA_DIR).mkdir(parents=True)
    (padded / "saved_model.pb").write_bytes(b"x")
    metadata = {"job_id": "job-a", "metrics": {"test_accuracy": 0.99}, "runtime": {"epochs_run": 7}}
    (padded / contract.METADATA_FILE).write_text(json.dumps(metadata))
    ok, why = quality_gate(PublishSpec(only_if_better=True), 0.5, model_dir / "m")
    assert not ok and "not better than the served version 5 (0.9900)" in why
    earlier = published_before(model_dir, "m", "job-a")
    assert earlier is not None and earlier["version"] == 5
    assert (earlier["metrics"], earlier["epochs_run"]) == ({"test_accuracy": 0.99}, 7)


def test_publish_takes_the_next_version_and_skips_staging(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    _version(model_dir / "m", 1, 0.9)
    staged = staging_dir(model_dir / "m", "job1")
    staged.mkdir()
    (staged / "saved_model.pb").write_bytes(b"x")
    assert list_versions(model_dir / "m") == [1]  # ".tmp-job1" is not a version
    assert publish(staged, model_dir, "m", "job1") == (2, True)
    assert not staged.exists() and (model_dir / "m" / "2" / "saved_model.pb").is_file()
    assert 'name: "m"' in (model_dir / "models.config").read_text()
