"""A real gateway with no model server behind it (the job routes need none), shared by the tests
of one module: on the session's Redis (``gateway``), or on a Redis of the module's own that its
tests may stop and restart (``own_redis``, ``own_gateway``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.gateway import Gateway, gateway_running
from harness.redis import RestartableRedis


def _module_name(request: pytest.FixtureRequest) -> str:
    return request.module.__name__.rsplit(".", 1)[-1]


def _module_gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    logs_dir: Path,
    redis_url: str,
) -> Iterator[Gateway]:
    name = f"gateway-{_module_name(request)}"
    root = tmp_path_factory.mktemp(name)
    with gateway_running(name, logs_dir, redis_url, None, root / "models", root / "secrets") as up:
        yield up


@pytest.fixture(scope="module")
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    logs_dir: Path,
    redis_url: str,
) -> Iterator[Gateway]:
    yield from _module_gateway(request, tmp_path_factory, logs_dir, redis_url)


@pytest.fixture(scope="module")
def own_redis(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs_dir: Path
) -> Iterator[RestartableRedis]:
    name = f"redis-{_module_name(request)}"
    server = RestartableRedis(tmp_path_factory.mktemp(name), logs_dir, name)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def own_gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    logs_dir: Path,
    own_redis: RestartableRedis,
) -> Iterator[Gateway]:
    yield from _module_gateway(request, tmp_path_factory, logs_dir, own_redis.url)
