"""A child of `fdl up` that fails at every start, after its imports, is given up (FATAL) after its
retries, as docs/deploy.md says: its start time covers its imports. Before, the gateway counted
as started 2 s after its spawn, so on a loaded machine (imports of 6-9 s) one that then failed
was restarted every few seconds forever, never FATAL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.procs import Process, free_port, wait_for
from harness.stack import stop_and_check_no_orphans

KEY = "admin-key-for-stack-tests-0123"
# In no network of this machine (TEST-NET-1, RFC 5737): the gateway imports its app, then fails
# to bind. `fdl up` leaves an address that is not this machine's to the server to report.
ELSEWHERE = "192.0.2.1"
# Imported by every Python process of the stack: the gateway's start takes 4 s longer, as its
# imports do on a loaded machine (a simulated import time, not a wait for an event).
SLOW_IMPORTS = """import os, time
if os.environ.get("SUPERVISOR_PROCESS_NAME") == "gateway":
    time.sleep(4)
"""


@pytest.mark.slow
def test_a_gateway_that_fails_after_its_imports_reaches_fatal(
    tmp_path: Path, logs_dir: Path
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_IMPORTS)
    var_dir = tmp_path / "var"
    env = {
        "FDL_MODEL_DIR": str(var_dir / "models"),
        "FDL_VAR_DIR": str(var_dir),
        "FDL_DATA_DIR": str(var_dir / "data"),
        "FDL_GATEWAY_HOST": ELSEWHERE,
        "FDL_GATEWAY_PORT": str(free_port()),
        "FDL_SERVING_GRPC_PORT": str(free_port()),
        "FDL_SERVING_REST_PORT": str(free_port()),
        "FDL_REDIS_URL": "",
        "FDL_API_KEYS": KEY,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")])
        ),
    }
    process = Process("fdl-up-gives-up", ["fdl", "up"], logs_dir, env=env, cwd=tmp_path)
    log = var_dir / "supervisord.log"

    def never_counted_as_started() -> None:
        process.ensure_alive()
        text = log.read_text() if log.exists() else ""
        assert "success: gateway entered RUNNING state" not in text, text

    try:
        # 11 starts of about 5 s, and back-offs of 1 + 2 + ... + 10 s between them.
        wait_for(
            lambda: log.exists() and "gave up: gateway entered FATAL state" in log.read_text(),
            300,
            "supervisord to give the gateway up",
            interval=0.5,
            check=never_counted_as_started,
        )
        text = log.read_text()
        assert text.count("spawned: 'gateway'") == 11, text
        assert "cannot assign requested address" in process.log_tail(200_000)
    finally:
        stop_and_check_no_orphans(process)
