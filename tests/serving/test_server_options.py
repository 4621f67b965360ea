"""Server options of tensorflow_model_server: session config file, SavedModel tags, tensor_content
responses, REST CORS support, and the flags accepted for compatibility."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from harness.tfs import expected_scores, images, predict_request, run_server_cli, scores_of
from serving.config_files import ConfigError, session_config

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}


def _http(method: str, url: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_session_config_file_then_flags_on_top(tmp_path: Path) -> None:
    path = tmp_path / "session.config"
    path.write_text(
        "intra_op_parallelism_threads: 7\n"
        "allow_soft_placement: true\n"
        "experimental { disable_thread_spinning: true }\n"
    )
    config = session_config(path)
    # As in tensorflow_model_server, the thread counts always come from the flags (0: auto).
    assert config.intra_op_parallelism_threads == 0
    assert config.allow_soft_placement and config.experimental.disable_thread_spinning
    config = session_config(path, session_parallelism=3)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 3)
    config = session_config(
        path, session_parallelism=3, intra_op_parallelism=2, gpu_memory_fraction=0.5
    )
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (2, 0)
    assert config.gpu_options.per_process_gpu_memory_fraction == 0.5
    with pytest.raises(ConfigError, match="You cannot configure all"):
        session_config(None, session_parallelism=1, intra_op_parallelism=1, inter_op_parallelism=1)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("intra_op_parallelism_thread: 2\n", "cannot parse session config file"),
        (None, "cannot read session config file"),
    ],
    ids=["unparsable", "missing"],
)
def test_bad_session_config_file_fails_at_start(tmp_path: Path, text, needle) -> None:
    path = tmp_path / "session.config"
    if text is not None:
        path.write_text(text)
    result = run_server_cli(
        f"--model_base_path={tmp_path}", f"--tensorflow_session_config_file={path}", "--port=0",
        "--rest_api_port=1",
    )  # fmt: skip
    assert result.returncode == 1
    assert needle in result.stderr and str(path) in result.stderr


def test_all_parallelism_flags_fail_at_start(tmp_path: Path) -> None:
    result = run_server_cli(
        f"--model_base_path={tmp_path}", "--tensorflow_session_parallelism=1",
        "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
    )  # fmt: skip
    assert result.returncode == 1
    assert "You cannot configure all" in result.stderr


@pytest.fixture(scope="module")
def optioned(impl, server_factory, model_stock, tmp_path_factory):
    """One server with the options below: tensor_content responses, CORS, a session config."""
    root = tmp_path_factory.mktemp("options")
    model_stock.install("a", root / "tiny", 1)
    session = root / "session.config"
    session.write_text("experimental { disable_thread_spinning: true }\n")
    server = server_factory(
        impl,
        "options",
        [
            "--model_name=tiny",
            f"--model_base_path={root / 'tiny'}",
            f"--tensorflow_session_config_file={session}",
            "--tensorflow_intra_op_parallelism=1",
            "--enable_serialization_as_tensor_content=true",
            "--rest_api_enable_cors_support=true",
            "--flush_filesystem_caches=false",
            "--remove_unused_fields_from_bundle_metagraph=false",
            "--enable_signature_method_name_check=true",
            "--per_process_gpu_memory_fraction=0.5",
            "--num_request_iterations_for_warmup=3",
        ],
    )
    server.version_dir = root / "tiny" / "1"
    return server


def test_outputs_in_tensor_content(optioned) -> None:
    batch = images(3, seed=4)
    response = optioned.prediction().Predict(predict_request("tiny", batch), timeout=30)
    output = response.outputs["scores"]
    assert output.tensor_content and not output.float_val
    assert [d.size for d in output.tensor_shape.dim] == [3, 4]
    np.testing.assert_allclose(
        scores_of(response), expected_scores(optioned.version_dir, batch), rtol=1e-5, atol=1e-6
    )


def test_warmup_iterations(optioned, impl) -> None:
    if impl != "fdl":
        pytest.skip("platform: the warmup log line checked here is fdl-model-server's own")
    log = optioned.process.log_tail(200_000)
    assert "tiny version 1: 2 warmup requests, each run 3 times" in log  # "a" carries two


def test_cors_headers_on_the_model_api(optioned) -> None:
    for path in ("/v1/models/tiny", "/v1/models/missing", "/v1/models/tiny/metadata"):
        status, headers, _ = _http("GET", optioned.rest + path)
        assert status in (200, 404)
        assert {k: headers.get(k) for k in CORS} == CORS, path


def test_cors_preflight_needs_an_origin(optioned) -> None:
    url = optioned.rest + "/v1/models/tiny:predict"
    status, headers, _ = _http("OPTIONS", url, {"Origin": "https://app.example"})
    assert status == 200 and headers.get("Access-Control-Allow-Origin") == "*"
    status, _, _ = _http("OPTIONS", url)
    assert status == 400


def test_no_cors_headers_by_default(impl, server_factory, model_stock, tmp_path_factory) -> None:
    root = tmp_path_factory.mktemp("no-cors")
    model_stock.install("a", root / "tiny", 1)
    server = server_factory(
        impl, "no-cors", ["--model_name=tiny", f"--model_base_path={root}/tiny"]
    )
    status, headers, _ = _http("GET", server.rest + "/v1/models/tiny")
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    response = server.prediction().Predict(predict_request("tiny", images(1)), timeout=30)
    assert response.outputs["scores"].float_val and not response.outputs["scores"].tensor_content


def _save_with_tags(path: Path, tags: list[str]) -> None:
    """A SavedModel whose only MetaGraph has ``tags``: ``scores = images * 2`` (float)."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        images_in = tf.compat.v1.placeholder(tf.float32, [None, 2], name="images")
        scores = tf.multiply(images_in, 2.0, name="scores")
        signature = tf.compat.v1.saved_model.predict_signature_def(
            {"images": images_in}, {"scores": scores}
        )
        builder = tf.compat.v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(
            session, tags, signature_def_map={"serving_default": signature}
        )
        builder.save()


def test_saved_model_tags_choose_the_meta_graph(impl, server_factory, tmp_path_factory) -> None:
    import tensorflow as tf

    root = tmp_path_factory.mktemp("tags")
    _save_with_tags(root / "tagged" / "1", ["custom"])
    server = server_factory(
        impl,
        "tags",
        [
            "--model_name=tagged",
            f"--model_base_path={root / 'tagged'}",
            "--saved_model_tags=custom",
        ],
    )
    request = predict_request("tagged", np.array([[1.0, 2.5]], np.float32))
    response = server.prediction().Predict(request, timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["scores"]), [[2.0, 5.0]])


def test_default_tag_is_serve(tmp_path: Path) -> None:
    _save_with_tags(tmp_path / "tagged" / "1", ["custom"])
    result = run_server_cli(
        "--model_name=tagged", f"--model_base_path={tmp_path / 'tagged'}", "--port=0",
        "--rest_api_port=1", "--max_num_load_retries=0",
    )  # fmt: skip
    assert result.returncode == 1
    assert "MetaGraphDef associated with tags 'serve' could not be found" in result.stderr
