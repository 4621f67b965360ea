"""Private Redis servers on free ports, started the way `fdl up` starts its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from fdl.redis_server import redis_server_argv
from harness.procs import Process, free_port, wait_for


class RestartableRedis:
    """A private Redis on a fixed port whose data (append-only file) survives ``stop``/``start``,
    as the Redis of `fdl up` or of a deployment does across a restart."""

    def __init__(
        self, data_dir: Path, logs_dir: Path, name: str | None = None, binary: str | None = None
    ) -> None:
        self.port = free_port()
        self.binary = binary  # a redis-server of its own; None: the one `fdl up` picks
        self.data_dir, self.logs_dir = data_dir, logs_dir
        self.name = name or f"redis-{self.port}"
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Process | None = None

    def start(self) -> None:
        argv = redis_server_argv(self.port, self.data_dir)
        if self.binary is not None:
            argv[0] = self.binary
        self.process = Process(self.name, argv, self.logs_dir)
        client = redis.Redis.from_url(self.url)
        try:
            wait_for(client.ping, 20, "redis", check=self.process.ensure_alive)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits, as on a clean restart."""
        if self.process is not None:
            self.process.stop()
            self.process = None


@contextmanager
def redis_running(data_dir: Path, logs_dir: Path, name: str = "redis") -> Iterator[str]:
    """A private Redis, ready; yields its URL and stops it on leaving."""
    server = RestartableRedis(data_dir, logs_dir, name)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
