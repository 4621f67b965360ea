"""The REST limits of fdl-model-server are bounded at start, naming the flag (exit 2): a negative
size or time used to turn its limit off without a word, a huge size meant no limit, and a huge
time stopped the server with ``OverflowError`` once every model had loaded.
``--rest_api_timeout_in_ms``, TF Serving's own flag, takes what its int32 holds."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.procs import free_port
from harness.tfs import run_server_cli
from serving.flags import FlagError, parse_flags

HUGE = str(10**30)
BOUNDED = {
    "rest_api_max_body_bytes": (1, 2**40),
    "rest_api_max_body_bytes_in_flight": (1, 2**40),
    "rest_api_max_header_bytes": (1024, 16 * 1024 * 1024),
    "rest_api_body_timeout_in_ms": (1, 86_400_000),
    "rest_api_header_timeout_in_ms": (1, 86_400_000),
}


def flags(*extra: str) -> argparse.Namespace:
    return parse_flags(["--model_base_path=/m", *extra])


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_each_limit_is_zero_or_within_its_bounds(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    low, high = BOUNDED[name]
    for value in (low, high, 0):
        assert getattr(flags(f"--{name}={value}"), name) == value
    for value in (str(low - 1) if low > 1 else "-1", str(high + 1), "-5", HUGE):
        with pytest.raises(FlagError) as caught:
            flags(f"--{name}={value}")
        assert str(caught.value).startswith(
            f"fdl-model-server: error: argument --{name}: expected 0 (no limit) or {low} to "
        ), caught.value
    capsys.readouterr()  # the usage lines


def test_the_deadline_flag_takes_an_int32_as_tf_serving(capsys: pytest.CaptureFixture[str]) -> None:
    for value in (-1, 0, 1, 2**31 - 1):
        assert flags(f"--rest_api_timeout_in_ms={value}").rest_api_timeout_in_ms == value
    for value in (2**31, HUGE):
        with pytest.raises(FlagError, match="argument --rest_api_timeout_in_ms: expected a 32-bit"):
            flags(f"--rest_api_timeout_in_ms={value}")
    with pytest.raises(FlagError, match="invalid integer value: 'abc'"):
        flags("--rest_api_max_body_bytes=abc")
    capsys.readouterr()


@pytest.mark.parametrize(
    "flag",
    [
        f"--rest_api_body_timeout_in_ms={HUGE}",
        f"--rest_api_header_timeout_in_ms={HUGE}",
        f"--rest_api_timeout_in_ms={HUGE}",
        "--rest_api_max_header_bytes=-5",
    ],
)
def test_the_real_server_refuses_them_before_it_loads(tmp_path: Path, flag: str) -> None:
    result = run_server_cli(
        f"--model_base_path={tmp_path}", f"--rest_api_port={free_port()}", flag, timeout=60
    )
    assert result.returncode == 2, result.stderr[-2000:]
    name = flag.split("=", 1)[0]
    assert f"fdl-model-server: error: argument {name}: expected" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
