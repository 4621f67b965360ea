"""``--enable_per_model_batching_parameters``: each version's ``batching_params.pbtxt`` decides
how it batches; a version without one is not batched; a bad file fails the version's load."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from harness.tfs import (
    BATCH_COUNT,
    concurrently,
    expected_scores,
    images,
    metric,
    model_config,
    predict_request,
    run_server_cli,
    scores_of,
)

PER_MODEL = (
    "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 200000 }\n"
    "max_enqueued_batches { value: 100 }\n"
)


def _batches(server, model: str) -> float:
    """Batch runs of ``model`` so far (our server's batch-size histogram)."""
    return metric(server, BATCH_COUNT, model_name=model)


@pytest.fixture(scope="module")
def per_model(impl, server_factory, model_stock, tmp_path_factory):
    root = tmp_path_factory.mktemp("per-model")
    batched = model_stock.install("a", root / "batched", 1)
    (batched / "batching_params.pbtxt").write_text(PER_MODEL)
    model_stock.install("a", root / "plain", 1)
    config = root / "models.config"
    config.write_text(model_config({"batched": root / "batched", "plain": root / "plain"}))
    # The server's file would make every batch a single task; per-model files replace it.
    common = root / "batching.config"
    common.write_text("max_batch_size { value: 1 }\nnum_batch_threads { value: 2 }\n")
    monitoring = root / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    return server_factory(
        impl,
        "per-model",
        [
            f"--model_config_file={config}",
            "--enable_batching=true",
            f"--batching_parameters_file={common}",
            "--enable_per_model_batching_parameters=true",
            f"--monitoring_config_file={monitoring}",
        ],
    )


def test_version_file_sets_the_batching(per_model, model_stock, impl) -> None:
    callers = 12
    inputs = [images(1, seed=300 + i) for i in range(callers)]
    expected = expected_scores(model_stock.versions["a"], np.concatenate(inputs))
    stub = per_model.prediction()
    for model in ("batched", "plain"):
        results = concurrently(
            callers, lambda i, m=model: stub.Predict(predict_request(m, inputs[i]), timeout=60)
        )
        for i, result in enumerate(results):
            assert not isinstance(result, grpc.RpcError), result
            np.testing.assert_allclose(scores_of(result), expected[i : i + 1], rtol=1e-5)
    if impl == "fdl":
        batches = _batches(per_model, "batched")
        assert 0 < batches < callers, f"{batches} batch runs for {callers} concurrent calls"
        assert _batches(per_model, "plain") == 0  # no batching_params.pbtxt: not batched


def test_bad_version_file_fails_the_load(tmp_path, model_stock) -> None:
    version = model_stock.install("a", tmp_path / "m", 1)
    (version / "batching_params.pbtxt").write_text("max_batch_size: 8\n")  # not a wrapper
    result = run_server_cli(
        "--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--port=0", "--rest_api_port=1",
        "--enable_batching", "--enable_per_model_batching_parameters",
        "--max_num_load_retries=0",
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot parse batching parameters file" in result.stderr
    assert "batching_params.pbtxt" in result.stderr
