"""`fdl ARGS` run in the background, its output read line by line as it comes (tests of the
CLI's long commands: `fdl train` following a job)."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading

from harness.procs import REPO_ROOT, VENV_BIN, wait_for


class BackgroundCli:
    """The `fdl` of this virtual environment (or ``command``) with ``env``; stdout and stderr
    together."""

    def __init__(
        self, args: list[str], env: dict[str, str], command: list[str] | None = None
    ) -> None:
        self.popen = subprocess.Popen(
            [*(command or [str(VENV_BIN / "fdl")]), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def output(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)

    def wait_line(self, text: str, timeout: float = 60) -> str:
        """The line holding ``text``; fails at once when fdl exits without printing it."""
        wait_for(
            lambda: text in self.output() or self.popen.poll() is not None,
            timeout,
            f"{text!r} in fdl's output",
            interval=0.1,
        )
        if self.popen.poll() is not None:
            self.pump.join(10)  # the last lines it printed
        out = self.output()
        assert text in out, f"fdl exited {self.popen.returncode}:\n{out}"
        return next(line for line in out.splitlines(keepends=True) if text in line)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            self.popen.wait(30)
