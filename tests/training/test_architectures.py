"""Every architecture trains a few steps through the job function, publishes, and its export
loads through the Session loader and predicts; image-folder datasets work with both families."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from fdl import contract
from fdl.jobs import JobStore
from harness.savedmodel import load_session, predict


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3", decode_responses=True)
    yield JobStore(client)
    client.close()


CASES = [
    ("mnist_mlp", "mnist", (28, 28, 1), 10),
    ("mnist_cnn", "mnist", (28, 28, 1), 10),
    ("cifar10_cnn", "tinycifar", (32, 32, 3), 10),
    ("cifar10_cnn_bn", "tinycifar", (32, 32, 3), 10),
    ("mnist_cnn", "shapes", (28, 28, 1), 3),
    ("cifar10_cnn", "shapes", (32, 32, 3), 3),
]


@pytest.mark.parametrize(("model", "dataset", "shape", "classes"), CASES)
def test_architecture_trains_exports_and_predicts(
    model: str,
    dataset: str,
    shape: tuple[int, int, int],
    classes: int,
    store: JobStore,
    data_dir: Path,
    small_data_dir: Path,
    job_in_process,
) -> None:
    result, record, model_dir = job_in_process(
        store, f"arch-{model}-{dataset}", data_dir if dataset == "mnist" else small_data_dir,
        model=model, dataset=dataset, max_train_examples=96, publish_as="m",
    )  # fmt: skip
    assert record["status"] == "succeeded", record["error"]
    assert result is not None and result["published"] and result["version"] == 1

    path = model_dir / "m" / "1"
    metadata = json.loads((path / contract.METADATA_FILE).read_text())
    names = metadata["class_names"]
    assert len(names) == classes and metadata["architecture"] == model
    session, signature = load_session(path)
    images = np.random.default_rng(1).integers(0, 256, (5, *shape), dtype=np.uint8)
    with session:
        scores, labels = predict(session, signature, images)
    assert [d.size for d in signature.inputs[contract.INPUT_KEY].tensor_shape.dim] == [-1, *shape]
    assert scores.shape == (5, classes) and np.isfinite(scores).all()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert [c.decode() for c in labels[0]] == names
    if dataset == "tinycifar":
        assert names[:3] == ["airplane", "automobile", "bird"]
