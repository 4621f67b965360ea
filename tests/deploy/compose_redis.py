"""The compose (and Kubernetes) Redis command, run here with a password on a loopback port."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import containers as c
from harness.procs import Process, free_port, port_open, wait_for


def redis_argv(data: Path, port: int) -> list[str]:
    """The container's command with its data folder, port and address swapped for local ones
    (options appended to its ``--dir``, inside the shell script it runs)."""
    return c.swap(c.command("redis"), "/data", f"{data} --port {port} --bind 127.0.0.1")


@dataclass
class RedisServer:
    process: Process
    port: int
    password: str

    @property
    def url(self) -> str:
        """The URL a client of the stack uses: the compose URL with this host and port."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


@contextmanager
def compose_redis(data: Path, logs_dir: Path, name: str) -> Iterator[RedisServer]:
    """Redis started by its container command, its password in REDISCLI_AUTH as in the pod."""
    password, port = secrets.token_hex(32), free_port()
    env = {"REDISCLI_AUTH": password}
    process = Process(name, redis_argv(data, port), logs_dir, env=env)
    try:
        wait_for(lambda: port_open(port), 20, name, check=process.ensure_alive)
        yield RedisServer(process, port, password)
    finally:
        process.stop()
