"""Read a server-sent event stream in a thread, keeping its raw lines and how it ended."""

from __future__ import annotations

import threading

import httpx


class StreamReader(threading.Thread):
    """Reads one SSE response line by line, keeping every line and how the stream ended."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.lines: list[str] = []
        self.error: BaseException | None = None
        self.status_code = 0

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=60) as response:
                self.status_code = response.status_code
                for line in response.iter_lines():
                    self.lines.append(line)
        except BaseException as error:  # the test reports it
            self.error = error

    def keep_alives(self) -> int:
        return sum(1 for line in self.lines if line.startswith(": keep-alive"))

    def ensure_open(self) -> None:
        if not self.is_alive():
            raise AssertionError(f"stream ended early ({self.error!r}): {self.lines}")
