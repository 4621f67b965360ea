"""Training is deterministic on CPU for a given seed (and depends on it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from fdl.jobs import JobStore
from fdl.jobspec import JobSpec
from training.data.mnist import load_mnist
from training.trainer import train


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/4", decode_responses=True)
    yield JobStore(client)
    client.close()


def test_same_seed_same_weights_other_seed_other_weights(store: JobStore, data_dir: Path) -> None:
    data = load_mnist(data_dir, allow_download=False).capped(600, 100)

    def run(seed: int) -> tuple[list[np.ndarray], dict]:
        spec = JobSpec(
            model="mnist_mlp",
            epochs=2,
            batch_size=50,
            validation_split=100,
            seed=seed,
            regularization={"dropout": 0.2},
        )
        job_id = f"det-{seed}-{np.random.default_rng().integers(1 << 30)}"
        store.create(spec.model_dump(mode="json"), job_id)
        outcome = train(spec, data, store, job_id, tensorboard_dir=None)
        return outcome.model.get_weights(), outcome.metrics

    first, metrics_1 = run(5)
    second, metrics_2 = run(5)
    other, _ = run(6)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert metrics_1 == metrics_2
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
