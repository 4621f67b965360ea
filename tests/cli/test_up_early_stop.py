"""A stop signal sent while `fdl up` hands over to supervisord (after its exec, before
supervisord's handlers are in) stops the stack: none is lost, and no child is started.

Before, it was lost where SIGINT came ignored (a script's `fdl up &`: the stack then ran on,
Ctrl-C never acted on), and otherwise killed the new process half-way (its default action, or a
KeyboardInterrupt out of supervisord's imports: a traceback, exit status 1). The signal is sent
at a moment read from /proc, not by luck of timing: once the process runs ``fdl.supervise``, while
it does not catch the signal yet (supervisord sets its handlers 0.4 s after the exec, or more).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from harness.procs import Process, wait_for
from harness.stack import stop_and_check_no_orphans
from tests.cli.test_up_refuses import up_env

STOPPED = "as the stack started: stopping, no child started"


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _handing_over(pid: int) -> bool:
    """Whether ``pid`` has exec'd into supervisord's program (``python -m fdl.supervise``)."""
    return b"fdl.supervise" in Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.parametrize(
    ("sig", "argv"),
    [
        # SIGINT ignored from the start, as for a background job of a script.
        (signal.SIGINT, ["sh", "-c", "trap '' INT; exec fdl up"]),
        (signal.SIGINT, ["fdl", "up"]),
        (signal.SIGTERM, ["fdl", "up"]),
    ],
    ids=["sigint-inherited-ignored", "sigint", "sigterm"],
)
def test_a_stop_signal_during_the_hand_over_stops_the_stack(
    sig: signal.Signals, argv: list[str], tmp_path: Path, logs_dir: Path
) -> None:
    name = f"fdl-up-early-{sig.name.lower()}-{len(argv)}"
    process = Process(name, argv, logs_dir, env=up_env(tmp_path), cwd=tmp_path)
    try:
        wait_for(
            lambda: _handing_over(process.pid),
            60,
            "the exec into supervisord",
            interval=0.002,
            check=process.ensure_alive,
        )
        caught = int(_status(process.pid)["SigCgt"], 16)
        process.popen.send_signal(sig)
        # The moment tested: sent before supervisord set its handlers (SIGCHLD's among them;
        # Python's own, for SIGINT, is set at its start).
        assert not caught & (1 << (signal.SIGCHLD - 1)), "supervisord's handlers were in already"
        try:
            status = process.popen.wait(15)
        except subprocess.TimeoutExpired:
            status = None
        log = process.log_tail(20000)
        assert status == 0, f"{sig.name} at the hand-over: exit status {status}\n{log}"
        assert STOPPED in log, log
        assert "spawned:" not in log, log
        assert "Traceback" not in log, log
    finally:
        stop_and_check_no_orphans(process)
