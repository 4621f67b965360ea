"""Flags and configuration files checked at start, with a message that names the flag: ports out of
0-65535 (they bound another port, or failed with a traceback once every model had loaded),
negative thread counts (refused only after every load, without the flag's name), a configuration
file that is a FIFO (the server hung with no output) or a directory. The usage of a flag error
goes to stderr. ``--bind_address`` takes an IPv6 literal with or without brackets."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from harness.procs import Process, free_port, port_open, wait_for
from harness.tfs import SERVER, run_server_cli

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize(
    "flag",
    [
        "--port=99999",
        "--port=-1",
        "--rest_api_port=99999",
        "--rest_api_port=-1",
        "--grpc_max_threads=-1",
        "--rest_api_num_threads=-3",
        "--bind_address=[::1",
        "--bind_address=[localhost]",
    ],
)
def test_a_flag_out_of_range_is_a_usage_error(tmp_path: Path, flag: str) -> None:
    result = run_server_cli(
        f"--model_base_path={tmp_path}", f"--rest_api_port={free_port()}", flag, timeout=60
    )
    assert result.returncode == 2, result.stderr
    name = flag.split("=", 1)[0]
    assert f"fdl-model-server: error: argument {name}: expected" in result.stderr
    assert result.stderr.startswith("usage: fdl-model-server"), result.stderr
    assert result.stdout == ""


def test_the_usage_of_a_flag_error_goes_to_stderr(tmp_path: Path) -> None:
    result = run_server_cli(f"--model_base_path={tmp_path}", "--enable_batching=maybe")
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert result.stderr.startswith("usage: fdl-model-server"), result.stderr


def test_port_zero_still_disables_a_listener(tmp_path: Path) -> None:
    """0 is in range: both listeners off is refused for having nothing to serve on, not for 0."""
    result = run_server_cli(f"--model_base_path={tmp_path}", "--port=0", "--rest_api_port=0")
    assert result.returncode == 2 and "nothing to serve on" in result.stderr


@pytest.mark.parametrize("address", ["[::1]", "::1"])
def test_an_ipv6_bind_address_serves_grpc_and_rest(
    tmp_path: Path, model_stock, logs_dir: Path, address: str
) -> None:
    model_stock.install("a", tmp_path / "m", 1)
    port, rest_port = free_port(), free_port()
    argv = [
        *SERVER,
        f"--port={port}",
        f"--rest_api_port={rest_port}",
        f"--bind_address={address}",
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
    ]
    process = Process(f"ipv6-{address.strip('[]').replace(':', '_')}", argv, logs_dir)
    try:
        with grpc.insecure_channel(f"[::1]:{port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "m"

            def available() -> bool:
                response = stub.GetModelStatus(request, timeout=5)
                return [s.state for s in response.model_version_status] == [AVAILABLE]

            wait_for(available, 120, "m over gRPC on [::1]", check=process.ensure_alive)
        with urllib.request.urlopen(f"http://[::1]:{rest_port}/v1/models/m", timeout=10) as reply:
            body = json.load(reply)
        assert body["model_version_status"][0]["state"] == "AVAILABLE"
        assert not port_open(port) and not port_open(rest_port)  # only ::1, not 127.0.0.1
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("flag", "kind"),
    [
        ("--model_config_file", "FIFO"),
        ("--model_config_file", "directory"),
        ("--batching_parameters_file", "FIFO"),
        ("--monitoring_config_file", "FIFO"),
    ],
)
def test_a_config_file_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, flag: str, kind: str
) -> None:
    path = tmp_path / "config"
    if kind == "FIFO":
        os.mkfifo(path)
    else:
        path.mkdir()
    flags = [f"{flag}={path}", f"--rest_api_port={free_port()}", "--port=0"]
    if flag != "--model_config_file":
        flags += [f"--model_base_path={tmp_path}", "--enable_batching"]
    result = run_server_cli(*flags, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"({flag}): it is a {kind}, not a regular file" in result.stderr, result.stderr
