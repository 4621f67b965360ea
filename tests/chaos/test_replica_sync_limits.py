"""What the replica sync (api/replica_sync.py) cannot fix, it does not retry round after round,
and it never holds up a promotion.

Real model servers that never poll the config file, real gateways whose sync runs every 0.5 s.
(1) A replica where the config's labelled version cannot load (it fails at once, or stays
LOADING between load retries): a sent config is refused or changes nothing, so the replica is
sent it again only after a backoff, logged once, and the repository's lock stays free. Before,
every round took the lock, resent the config (holding the lock up to FDL_PROMOTE_TIMEOUT_S while
the version did not load) and logged an error. (2) Two gateways with different repositories in
front of one model server: each sees the other's config undo its own, and backs off with a
warning naming that cause; before, the label flapped some 30 times in 20 s. (3) A promotion
through a gateway whose sync is in the middle of such a send goes at once; before, it waited for
the sync's send to time out.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import filelock
import pytest

from bench.promotion_race import MODEL, build_repository
from fdl.repository import Repository
from harness.gateway import Gateway, log_lines, set_label, start_gateway
from harness.model_server import ModelServer, start_model_server, wait_for_models
from harness.procs import wait_for
from tests.chaos.grpc_tap import RELOAD, Tap
from tests.chaos.test_replica_sync import NO_POLLING, served, write_labels

SYNC_S = "0.5"
WATCH_S = 15
# Version 2's files are broken: it fails to load, at once or after every retry.
FAILS = ("--max_num_load_retries=0",)
RETRIES = ("--max_num_load_retries=5", "--load_retry_interval_micros=600000000")
SYNC_LOGGERS = ("api.replica_sync", "api.replica_configs", "api.promotion")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    model_dir = tmp_path / "models"
    build_repository(model_dir)
    write_labels(model_dir, {MODEL: {"stable": 1}})
    return model_dir


def start_server(model_dir: Path, logs: Path, flags: tuple[str, ...] = ()) -> ModelServer:
    server = start_model_server("sync-limits", model_dir, logs, flags=NO_POLLING + flags)
    try:
        wait_for_models(server, {MODEL: 1})
        wait_for_models(server, {MODEL: 3})
    except BaseException:
        server.process.stop()
        raise
    return server


@pytest.fixture
def left_out(
    repository: Path, logs_dir: Path, request: pytest.FixtureRequest
) -> Iterator[ModelServer]:
    """A replica serving stable -> 1, left out of stable -> 2, whose version 2 cannot load."""
    (repository / MODEL / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    server = start_server(repository, logs_dir, request.param)
    try:
        write_labels(repository, {MODEL: {"stable": 2}})
        yield server
    finally:
        server.process.stop()


def gateway_for(
    name: str, port: int, model_dir: Path, redis_url: str, logs: Path, **env: str
) -> Gateway:
    env = {"FDL_REPLICA_SYNC_S": SYNC_S, "FDL_METADATA_TIMEOUT_S": "2"} | env
    return start_gateway(name, logs, redis_url, port, model_dir, logs / f"{name}-secrets", **env)


def lock_free(model_dir: Path) -> bool:
    lock = Repository(model_dir).file_lock(timeout_s=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        return False
    lock.release()
    return True


def sync_lines(gateway: Gateway, level: str) -> list[str]:
    return [
        line["message"]
        for line in log_lines(gateway.process)
        if line["logger"] in SYNC_LOGGERS and line["level"] == level
    ]


@pytest.mark.parametrize("left_out", [FAILS, RETRIES], ids=["fails", "retries"], indirect=True)
def test_a_replica_the_config_cannot_fix_is_left_alone_for_a_while(
    left_out: ModelServer, repository: Path, redis_url: str, logs_dir: Path
) -> None:
    tap = Tap(left_out.target)
    try:
        env = {"FDL_PROMOTE_TIMEOUT_S": "3"}
        with closing(
            gateway_for(f"sync-stuck-{tap.port}", tap.port, repository, redis_url, logs_dir, **env)
        ) as gateway:
            free = held = 0
            end = time.monotonic() + WATCH_S
            while time.monotonic() < end:
                if lock_free(repository):
                    free += 1
                else:
                    held += 1
                time.sleep(0.1)  # sampling the lock over a fixed window, not waiting for an event
            # One send (refused, or taken in two steps to no effect), and none in the backoff.
            assert tap.calls[RELOAD] <= 4, tap.calls
            assert free / (free + held) > 0.6, (free, held)
            warnings = sync_lines(gateway, "warning")
            assert len(warnings) == 1 and f":{tap.port}" in warnings[0], warnings
            assert sync_lines(gateway, "error") == []
            assert served(left_out, "stable") == 1
    finally:
        tap.close()


def test_two_gateways_with_different_repositories_back_off(
    repository: Path, redis_url: str, logs_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(repository, other)
    write_labels(other, {MODEL: {"stable": 2}})
    server = start_server(repository, logs_dir)
    try:
        with (
            closing(gateway_for("sync-one", server.port, repository, redis_url, logs_dir)) as one,
            closing(gateway_for("sync-two", server.port, other, redis_url, logs_dir)) as two,
        ):
            seen = [served(server, "stable")]
            end = time.monotonic() + 20
            while time.monotonic() < end:
                if (now := served(server, "stable")) != seen[-1]:
                    seen.append(now)
                time.sleep(0.1)  # sampling the label over a fixed window
            assert len(seen) - 1 <= 8, seen
            warnings = sync_lines(one, "warning") + sync_lines(two, "warning")
            assert any("another config source" in line for line in warnings), warnings
    finally:
        server.process.stop()


@pytest.mark.parametrize("left_out", [RETRIES], ids=["retries"], indirect=True)
def test_a_promotion_does_not_wait_for_the_sync(
    left_out: ModelServer, repository: Path, redis_url: str, logs_dir: Path
) -> None:
    env = {"FDL_PROMOTE_TIMEOUT_S": "40"}
    with closing(
        gateway_for("sync-first", left_out.port, repository, redis_url, logs_dir, **env)
    ) as gateway:
        # The sync sends stable -> 2 and waits for version 2 to load, holding the lock.
        wait_for(lambda: not lock_free(repository), 30, "the sync to take the lock", interval=0.05)
        started = time.monotonic()
        response = set_label(gateway, MODEL, "stable", {"version": 3})
        took = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert took < 15, f"the promotion waited {took:.1f}s for the sync"
        assert served(left_out, "stable") == 3
    assert "Traceback" not in gateway.process.log_path.read_text()
