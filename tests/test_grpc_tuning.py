"""The gRPC tuning of our processes (fdl.grpc_tuning) must run before grpc is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import os, sys
import {module} as entry
assert "grpc" not in sys.modules, "importing {module} already imported grpc"
from fdl.grpc_tuning import tune_grpc
tune_grpc()
print(os.environ["GRPC_EXPERIMENTS"])
"""


@pytest.mark.parametrize("module", ["api.__main__", "serving.__main__"])
@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "-event_engine_client"), ("", ""), ("event_engine_client", "event_engine_client")],
    ids=["default", "empty-wins", "user-wins"],
)
def test_entry_points_tune_grpc_before_it_loads(module: str, given, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    if given is not None:
        env["GRPC_EXPERIMENTS"] = given
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == expected
