"""Output to a pipe whose reader has gone (`fdl jobs | true`) ends `fdl` quietly with 141, as the
shell reports for `ls` killed by SIGPIPE: not 1 (an API error), and no message."""

from __future__ import annotations

import os
import subprocess

import pytest

from fdl.cli_client import ExitCode
from harness.gateway import ADMIN_KEY, Gateway
from harness.procs import REPO_ROOT, VENV_BIN


def fdl_into_a_closed_pipe(args: list[str], gateway: Gateway) -> subprocess.CompletedProcess[str]:
    """`fdl ARGS` with its stdout a pipe whose reading end is already closed (what `| true`
    becomes once `true` has exited), so that its first write fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    env |= {"FDL_URL": gateway.url, "FDL_API_KEY": ADMIN_KEY}
    try:
        return subprocess.run(
            [str(VENV_BIN / "fdl"), *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [["jobs"], ["jobs", "--json"], ["models"], ["--help"], ["job", "--help"]],
    ids=" ".join,
)
def test_a_closed_pipe_exits_141_quietly(args: list[str], gateway: Gateway) -> None:
    done = fdl_into_a_closed_pipe(args, gateway)
    assert done.returncode == ExitCode.BROKEN_PIPE == 141, done.stderr
    assert done.stderr == ""
