"""The command line: TF Serving's flags, clear start-up errors, clean shutdown on SIGTERM."""

from __future__ import annotations

import signal
import time

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2

from harness.procs import Process, free_port, wait_for
from harness.tfs import (
    SERVER,
    images,
    predict_request,
    rpc_code,
    run_server_cli,
    served_version,
    start_server,
    statuses,
)
from serving.__main__ import SHUTDOWN_DEADLINE_S

TENSORFLOW = 'model_platform: "tensorflow"'  # TF Serving refuses a model without a platform


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--model_base_path=/m", "--bogus_flag=1"], "unknown flag '--bogus_flag=1'"),
        (["--model_base_path=/m", "--platform_config_file=x"], "--platform_config_file is a "),
        (["--port=9000"], "give --model_config_file"),
        (["--model_base_path=/m", "--port=1", "--rest_api_port=1"], "must differ"),
        (["--model_base_path=/m", "--enable_batching=maybe"], "expected true or false"),
    ],
    ids=["unknown", "unsupported", "no-model", "same-ports", "bad-bool"],
)
def test_bad_flags_fail_at_start(flags: list[str], needle: str) -> None:
    result = run_server_cli(*flags)
    assert result.returncode == 2
    assert needle in result.stderr


def test_unparsable_config_file_fails_at_start(tmp_path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { nme: 'x' } }\n")
    result = run_server_cli(f"--model_config_file={config}", "--port=0", "--rest_api_port=1")
    assert result.returncode == 1
    assert "cannot parse model config file" in result.stderr


def test_label_on_unloaded_version_fails_at_start(tmp_path, model_stock) -> None:
    model_stock.install("a", tmp_path / "m", 1)
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path / "m"}" '
        f'{TENSORFLOW} version_labels {{ key: "stable" value: 1 }} }} }}\n'
    )
    result = run_server_cli(f"--model_config_file={config}", "--port=0", "--rest_api_port=1")
    assert result.returncode == 1
    assert "which is not currently available for inference" in result.stderr


def _assert_stops_on_sigterm(process: Process) -> None:
    """SIGTERM ends the server cleanly (status 0) within its shutdown deadline."""
    started = time.monotonic()
    process.popen.send_signal(signal.SIGTERM)
    code = process.popen.wait(SHUTDOWN_DEADLINE_S + 10)
    assert code == 0, process.log_tail()
    assert time.monotonic() - started < SHUTDOWN_DEADLINE_S, process.log_tail()


def test_labels_at_start_unavailable_while_loading_then_sigterm(
    tmp_path, model_stock, logs_dir
) -> None:
    """The stack's flags: labels kept in labels.json survive a restart; a model still loading
    answers UNAVAILABLE; SIGTERM stops the server fast even with a load retry pending."""
    model_stock.install("a", tmp_path / "m", 1)
    model_stock.install("b", tmp_path / "m", 2)
    model_stock.install("broken", tmp_path / "slow", 1)
    config = tmp_path / "models.config"
    labelled = (
        f'config {{ name: "m" base_path: "{tmp_path / "m"}" {TENSORFLOW} '
        "model_version_policy { specific { versions: 1 versions: 2 } } "
        'version_labels { key: "stable" value: 1 } }'
    )
    config.write_text(f"model_config_list {{ {labelled} }}\n")
    server = start_server(
        "fdl",
        "labels",
        logs_dir,
        [
            f"--model_config_file={config}",
            "--model_config_file_poll_wait_seconds=1",
            "--allow_version_labels_for_unavailable_models=true",
            "--max_num_load_retries=1",
            "--load_retry_interval_micros=60000000",
        ],
    )
    try:
        request = predict_request("m", images(1), label="stable")
        assert server.prediction().Predict(request, timeout=30).model_spec.version.value == 1
        # As in TF Serving, start-up waits for one version of each model, not for all of them.
        wait_for(lambda: served_version(server, "m") == 2, 30, "version 2 of m")

        slow = f'config {{ name: "slow" base_path: "{tmp_path / "slow"}" {TENSORFLOW} }}'
        config.write_text(f"model_config_list {{ {labelled} {slow} }}\n")

        # The first load fails at once; the retry waits 60 s, and meanwhile the model is LOADING.
        wait_for(
            lambda: rpc_code(lambda: served_version(server, "slow")) == grpc.StatusCode.UNAVAILABLE,
            60,
            "UNAVAILABLE from a loading model",
            check=server.process.ensure_alive,
        )
        state = statuses(server, "slow")[1][0]
        assert state == get_model_status_pb2.ModelVersionStatus.LOADING

        _assert_stops_on_sigterm(server.process)
    finally:
        server.stop()


def test_sigterm_during_a_long_start_up_load_exits_at_once(tmp_path, model_stock, logs_dir) -> None:
    """A model still warming up at start-up (here: endless warmup replays) does not hold the
    process: SIGTERM ends it cleanly without waiting for the loader thread."""
    model_stock.install("a", tmp_path / "m", 1)
    argv = [
        *SERVER,
        f"--port={free_port()}",
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
        "--num_request_iterations_for_warmup=100000000",
    ]
    process = Process("long-warmup", argv, logs_dir)
    try:
        wait_for(
            lambda: "Restoring parameters" in process.log_tail(),
            90,
            "the model load to begin",
            check=process.ensure_alive,
        )
        _assert_stops_on_sigterm(process)
    finally:
        process.stop()
