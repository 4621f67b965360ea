"""A pool process runs job after job: each run must leave nothing of its traced training step
behind. TensorFlow keeps every graph-mode ``tf.custom_gradient`` in a process-global registry
(the strategy's all-reduce in Keras's optimizer), whose closures held each run's whole traced
step: a worker grew by about 5 MB a job until the out-of-memory killer took a job."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fdl.jobs import JobStore
from training.gradient_registry import _entries, custom_gradients


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3", decode_responses=True)
    yield JobStore(client)
    client.close()


def traced_steps() -> int:
    """FuncGraphs of Keras's training step still alive in this process."""
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(
        1
        for item in gc.get_objects()
        if isinstance(item, FuncGraph) and "one_step_on_data" in item.name
    )


def test_runs_leave_no_traced_step_behind(store: JobStore, data_dir: Path, job_in_process) -> None:
    def run(index: int) -> None:
        _, record, _ = job_in_process(
            store, f"released-{index}", data_dir, model="mnist_logreg", max_train_examples=64
        )
        assert record["status"] == "succeeded", record["error"]

    assert _entries() is not None, "TensorFlow's gradient registry moved"
    run(0)  # the first run may leave what any later run shares (imports, caches)
    registered, steps = custom_gradients(), traced_steps()
    for index in (1, 2):
        run(index)
    assert custom_gradients() == registered
    assert traced_steps() == steps
