"""The model server's poll, retry, thread and warmup flags take what TF Serving's int32 and int64
flags hold, refused at start otherwise (exit 2, naming the flag). A larger number used to be
accepted and stop a thread once the server ran: a poll interval of 10**20 seconds ended the
polling thread with ``OverflowError`` (new versions were never seen again), and an int64 retry
interval ended the retry timer of a failed load the same way."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.procs import free_port, wait_for
from harness.tfs import ModelStock, run_server_cli, statuses
from serving.flags import FlagError, parse_flags

INT32 = [
    "file_system_poll_wait_seconds",
    "model_config_file_poll_wait_seconds",
    "max_num_load_retries",
    "num_load_threads",
    "num_unload_threads",
    "num_request_iterations_for_warmup",
]
INT64 = [
    "load_retry_interval_micros",
    "tensorflow_session_parallelism",
    "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism",
]


def flags(*extra: str) -> argparse.Namespace:
    return parse_flags(["--model_base_path=/m", *extra])


@pytest.mark.parametrize("name", INT32 + INT64)
def test_each_takes_what_its_tf_serving_type_holds(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bits = 32 if name in INT32 else 64
    high = 2 ** (bits - 1) - 1
    for value in (-high - 1, -1, 0, 7, high):
        assert getattr(flags(f"--{name}={value}"), name) == value
    for value in (high + 1, -high - 2, 10**30):
        with pytest.raises(FlagError) as caught:
            flags(f"--{name}={value}")
        assert str(caught.value) == (
            f"fdl-model-server: error: argument --{name}: expected a {bits}-bit integer, "
            f"at most {high}, got {str(value)[:40]}"
        )
    with pytest.raises(FlagError, match=f"argument --{name}: invalid integer value: 'soon'"):
        flags(f"--{name}=soon")
    capsys.readouterr()  # the usage lines


def test_the_real_server_refuses_a_huge_poll_interval_before_it_loads(tmp_path: Path) -> None:
    result = run_server_cli(
        f"--model_base_path={tmp_path}",
        f"--rest_api_port={free_port()}",
        f"--file_system_poll_wait_seconds={10**20}",
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "argument --file_system_poll_wait_seconds: expected a 32-bit integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_longest_retry_interval_waits_instead_of_ending_the_timer(
    server_factory, model_stock: ModelStock, tmp_path: Path
) -> None:
    base = tmp_path / "flaky"
    model_stock.install("a", base, 1)  # the server waits for its first versions' retries
    server = server_factory(
        "fdl",
        "longest-retry",
        [
            f"--model_base_path={base}",
            "--model_name=flaky",
            f"--load_retry_interval_micros={2**63 - 1}",
            "--file_system_poll_wait_seconds=1",
        ],
    )
    model_stock.install("broken", base, 2)
    log = server.process.log_path
    wait_for(
        lambda: "Loading servable flaky version 2 failed (attempt 1 of 6)" in log.read_text(),
        60,
        "the first failed load",
        check=server.process.ensure_alive,
    )
    # The retry timer starts right after that line; a round trip later it waits or has failed.
    assert 2 in statuses(server, "flaky")
    server.stop()
    text = log.read_text()
    assert "OverflowError" not in text and "Traceback" not in text, text[-3000:]
