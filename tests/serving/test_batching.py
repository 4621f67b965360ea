"""Server-side batching: every caller gets its own rows back; overload is UNAVAILABLE."""

from __future__ import annotations

import json
import urllib.request

import grpc
import numpy as np
import pytest

from harness.procs import wait_for
from harness.tfs import (
    BATCH_COUNT,
    concurrently,
    expected_scores,
    images,
    metric,
    predict_request,
    scores_of,
)


def _start(impl, server_factory, model_stock, tmp_path_factory, name, params):
    root = tmp_path_factory.mktemp(name)
    model_stock.install("a", root / "tiny", 1)
    params_file = root / "batching.config"
    params_file.write_text(params)
    monitoring = root / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    return server_factory(
        impl,
        name,
        [
            "--model_name=tiny",
            f"--model_base_path={root / 'tiny'}",
            "--enable_batching=true",
            f"--batching_parameters_file={params_file}",
            f"--monitoring_config_file={monitoring}",
        ],
    )


def _params(allowed_batch_sizes: tuple[int, ...] = (), **fields: int | bool) -> str:
    """BatchingParameters text: each of ``fields`` a wrapper message, then the allowed sizes."""
    values = {k: str(v).lower() if isinstance(v, bool) else v for k, v in fields.items()}
    lines = [f"{k} {{ value: {v} }}" for k, v in values.items()]
    return "\n".join(lines + [f"allowed_batch_sizes: {n}" for n in allowed_batch_sizes]) + "\n"


@pytest.fixture(scope="module")
def batching(impl, server_factory, model_stock, tmp_path_factory):
    params = _params(
        max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=2,
        max_enqueued_batches=100, allowed_batch_sizes=(4, 8),
    )  # fmt: skip
    return _start(impl, server_factory, model_stock, tmp_path_factory, "batching", params)


@pytest.fixture(scope="module")
def tight(impl, server_factory, model_stock, tmp_path_factory):
    params = _params(
        max_batch_size=8, batch_timeout_micros=3_000_000, num_batch_threads=1,
        max_enqueued_batches=1,
    )  # fmt: skip
    return _start(impl, server_factory, model_stock, tmp_path_factory, "tight", params)


def _batches(server) -> float:
    return metric(server, BATCH_COUNT)


def _assert_each_caller_gets_its_rows(server, model_stock, inputs: list[np.ndarray]) -> None:
    """One concurrent Predict per input (of version "a"); each caller gets its own rows back."""
    expected = expected_scores(model_stock.versions["a"], np.concatenate(inputs))
    offsets = np.cumsum([0] + [len(x) for x in inputs])
    stub = server.prediction()
    results = concurrently(
        len(inputs), lambda i: stub.Predict(predict_request("tiny", inputs[i]), timeout=60)
    )
    for i, result in enumerate(results):
        assert not isinstance(result, grpc.RpcError), result
        np.testing.assert_allclose(
            scores_of(result), expected[offsets[i] : offsets[i + 1]], rtol=1e-5
        )


RUNTIME_COUNT = ":tensorflow:serving:runtime_latency_count"
RUNTIME_TINY = {"API": "Predict", "model_name": "tiny"}


def test_each_caller_gets_its_own_rows(batching, model_stock, impl) -> None:
    callers = 16
    timed_before = metric(batching, RUNTIME_COUNT, **RUNTIME_TINY)
    inputs = [images(1 + i % 3, seed=100 + i) for i in range(callers)]
    _assert_each_caller_gets_its_rows(batching, model_stock, inputs)
    if impl == "fdl":
        batches = _batches(batching)
        assert 0 < batches < callers, f"{batches} batch runs for {callers} concurrent calls"
    # runtime_latency times each request's Run (its wait and its batch's run), not each batch.
    assert metric(batching, RUNTIME_COUNT, **RUNTIME_TINY) - timed_before == callers
    # TF Serving's own batching metrics: one run count per batch, one queuing time per task.
    runs = metric(batching, ":tensorflow:serving:batching_session:wrapped_run_count")
    queued = metric(
        batching,
        ":tensorflow:serving:batching_session:queuing_latency_count",
        thread_pool_name="",
    )
    assert 0 < runs < queued and queued >= callers


def test_rest_and_grpc_callers_share_the_queue(batching, model_stock) -> None:
    """REST predictions join the same batch queue as gRPC ones and get their own rows back."""
    inputs = [images(1 + i % 2, seed=200 + i) for i in range(8)]
    stub = batching.prediction()

    def call(i: int) -> np.ndarray:
        if i % 2:
            return scores_of(stub.Predict(predict_request("tiny", inputs[i]), timeout=60))
        body = json.dumps({"instances": inputs[i].tolist()}).encode()
        url = f"{batching.rest}/v1/models/tiny:predict"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as reply:
            return np.array([row["scores"] for row in json.loads(reply.read())["predictions"]])

    for i, result in enumerate(concurrently(len(inputs), call)):
        assert not isinstance(result, grpc.RpcError), result
        expected = expected_scores(model_stock.versions["a"], inputs[i])
        np.testing.assert_allclose(result, expected, rtol=1e-5)


def test_caller_that_gives_up_leaves_the_queue_working(batching, model_stock) -> None:
    """A deadline that passes while the task waits for its batch (timeout 200 ms) is
    DEADLINE_EXCEEDED for that caller only; the next callers are served normally."""
    stub = batching.prediction()
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request("tiny", images(1, seed=5)), timeout=0.05)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    rows = images(2, seed=6)
    response = stub.Predict(predict_request("tiny", rows), timeout=60)
    np.testing.assert_allclose(
        scores_of(response), expected_scores(model_stock.versions["a"], rows), rtol=1e-5
    )


def test_batch_of_expired_callers_is_not_run(batching) -> None:
    """As in TF Serving, a batch whose every caller's deadline has passed by the time it would
    run (here after the 200 ms batch timeout) is dropped, not run: the queue drains quickly."""
    runs = ":tensorflow:serving:batching_session:wrapped_run_count"
    queued = ":tensorflow:serving:batching_session:queuing_latency_count"

    def queued_count() -> float:
        return metric(batching, queued, thread_pool_name="")

    runs_before, queued_before = metric(batching, runs), queued_count()
    stub = batching.prediction()
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request("tiny", images(1, seed=8)), timeout=0.15)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: queued_count() > queued_before, 30, "the task to leave the queue")
    assert metric(batching, runs) == runs_before


def test_padding_to_allowed_size_is_sliced_off(batching, model_stock) -> None:
    rows = images(3, seed=7)  # padded to 4 inside the server
    response = batching.prediction().Predict(predict_request("tiny", rows), timeout=60)
    assert scores_of(response).shape == (3, 4)
    np.testing.assert_allclose(
        scores_of(response), expected_scores(model_stock.versions["a"], rows), rtol=1e-5
    )


def test_queue_full_is_unavailable(tight) -> None:
    stub = tight.prediction()
    results = concurrently(
        2, lambda i: stub.Predict(predict_request("tiny", images(5, seed=i)), timeout=60)
    )
    failures = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(failures) == 1, results
    assert failures[0].code() == grpc.StatusCode.UNAVAILABLE


def test_task_larger_than_max_batch_size(tight, impl) -> None:
    if impl != "fdl":
        pytest.skip("platform: TF Serving may split large tasks (enable_large_batch_splitting)")
    with pytest.raises(grpc.RpcError) as info:
        tight.prediction().Predict(predict_request("tiny", images(9)), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "larger than maximum input batch size 8" in info.value.details()


def test_output_filter_order_shares_the_batch(tight) -> None:
    """Callers naming the same outputs in another order join one batch, as TF Serving's batching
    session keys its queues by the set of tensors; before, each order had a queue (and a Session
    callable) of its own, so they ran apart, and every order made a new one."""
    runs = ":tensorflow:serving:batching_session:wrapped_run_count"
    before = metric(tight, runs)
    orders = [["scores", "classes"], ["classes", "scores"]] * 2

    def call(i: int):
        request = predict_request("tiny", images(1, seed=500 + i))
        request.output_filter[:] = orders[i]
        return tight.prediction().Predict(request, timeout=60)

    results = concurrently(len(orders), call)
    for result in results:
        assert not isinstance(result, grpc.RpcError), result
        assert set(result.outputs) == {"scores", "classes"}
    assert metric(tight, runs) - before == 1


@pytest.fixture(scope="module")
def splitting(impl, server_factory, model_stock, tmp_path_factory):
    params = _params(
        max_batch_size=16, batch_timeout_micros=100_000, num_batch_threads=1,
        max_enqueued_batches=100, enable_large_batch_splitting=True, max_execution_batch_size=4,
    )  # fmt: skip
    return _start(impl, server_factory, model_stock, tmp_path_factory, "splitting", params)


def _histogram(server, le: str) -> float:
    bucket = f"{BATCH_COUNT.removesuffix('_count')}_bucket"
    return metric(server, bucket, le=le, model_name="tiny")


def test_large_tasks_are_split_and_joined(splitting, model_stock, impl) -> None:
    """Tasks up to max_batch_size (16) run in batches of at most 4 rows; each caller gets all
    its rows back in order, also when several split tasks share batches."""
    sizes = [10, 3, 7, 1, 16, 5]
    inputs = [images(size, seed=400 + i) for i, size in enumerate(sizes)]
    _assert_each_caller_gets_its_rows(splitting, model_stock, inputs)
    if impl == "fdl":
        batches = _batches(splitting)
        assert batches >= sum(sizes) / 4, f"{batches} batches for {sum(sizes)} rows"
        assert _histogram(splitting, "4.0") == batches  # no batch ran more than 4 rows
    with pytest.raises(grpc.RpcError) as info:
        splitting.prediction().Predict(predict_request("tiny", images(17)), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
