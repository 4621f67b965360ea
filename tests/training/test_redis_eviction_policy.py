"""An evicting Redis is reported (fdl/redis_policy.py): a Redis whose ``maxmemory-policy`` is not
``noeviction`` deletes job records and queued messages at its ``maxmemory``, silently (a job
answered 202 later answered 404; a queue's list was dropped and its jobs stayed ``queued`` until
a reaper sent them again). The worker logs it at ERROR once ready; the policy is read with
``CONFIG GET``, else from ``INFO memory`` where a managed Redis disabled ``CONFIG``, and nothing
is said where neither answers. The Redis of `fdl up` states ``noeviction``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from fdl.redis_policy import eviction_warning, read_policy
from fdl.redis_server import redis_server_argv
from harness.procs import Process, free_port, wait_for
from harness.redis import RestartableRedis
from harness.worker import worker_running

WARNING = "Redis's maxmemory-policy is allkeys-lru, not noeviction"


@contextmanager
def redis_with(tmp_path: Path, logs_dir: Path, *extra: str) -> Iterator[redis.Redis]:
    """A Redis started as `fdl up` starts it, with ``extra`` arguments; a client of it."""
    port = free_port()
    argv = [*redis_server_argv(port, tmp_path / f"redis-{port}"), *extra]
    process = Process(f"redis-policy-{port}", argv, logs_dir)
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        wait_for(client.ping, 20, "redis", check=process.ensure_alive)
        yield client
    finally:
        client.close()
        process.stop()


def test_the_worker_logs_an_evicting_redis_at_error(
    tmp_path: Path, logs_dir: Path, data_dir: Path
) -> None:
    server = RestartableRedis(tmp_path / "redis", logs_dir, "redis-evicting")
    server.start()
    try:
        redis.Redis(port=server.port).config_set("maxmemory-policy", "allkeys-lru")
        with worker_running(
            "worker-evicting-redis", server.url, data_dir, tmp_path, logs_dir
        ) as worker:
            line = wait_for(
                lambda: next(
                    (
                        line
                        for line in worker.process.log_tail(200_000).splitlines()
                        if WARNING in line
                    ),
                    None,
                ),
                30,
                "the worker's line about the eviction policy",
                check=worker.process.ensure_alive,
            )
        assert "ERROR" in line, line
        assert "job records" in line and "set maxmemory-policy noeviction" in line, line
    finally:
        server.stop()


def test_a_disabled_config_command_falls_back_to_info(tmp_path: Path, logs_dir: Path) -> None:
    args = ("--maxmemory-policy", "volatile-lru", "--rename-command", "CONFIG", "")
    with redis_with(tmp_path, logs_dir, *args) as client:
        assert read_policy(client) == "volatile-lru"
    warning = eviction_warning("volatile-lru")
    assert warning is not None and "Idempotency-Key records" in warning


def test_nothing_is_said_where_redis_does_not_tell(tmp_path: Path, logs_dir: Path) -> None:
    args = ("--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", "")
    with redis_with(tmp_path, logs_dir, *args, "--rename-command", "INFO", "") as client:
        assert read_policy(client) is None
    assert eviction_warning(None) is None
    assert eviction_warning("noeviction") is None


def test_fdl_ups_redis_never_evicts(tmp_path: Path, logs_dir: Path) -> None:
    argv = redis_server_argv(free_port(), tmp_path)
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"  # stated, not defaulted
    with redis_with(tmp_path, logs_dir) as client:
        assert read_policy(client) == "noeviction"
