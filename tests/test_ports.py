"""Test processes pick ports from one port server for the run (harness/ports.py): never the
same port in two processes, never one in the kernel's ephemeral range, where an outgoing
connection's source port could take it between the pick and the bind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harness.ports import ephemeral_start
from harness.procs import REPO_ROOT, free_port

PICK = (
    "import json; from harness.procs import free_port; "
    "print(json.dumps([free_port() for _ in range(50)]))"
)


def test_ports_come_from_the_runs_port_server_below_the_ephemeral_range() -> None:
    assert os.environ.get("PORTSERVER_ADDRESS"), "no port server for the run"
    ours = {free_port() for _ in range(50)}
    picked = subprocess.run(
        [sys.executable, "-c", PICK], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert picked.returncode == 0, picked.stderr
    theirs = set(json.loads(picked.stdout))
    assert len(ours) == len(theirs) == 50
    assert not ours & theirs, ours & theirs
    assert max(ours | theirs) < ephemeral_start()
