"""Shared real processes for the gateway tests: tiny models, a model server, gateways."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import pytest

from harness.gateway import Gateway, gateway_running, set_label
from harness.model_server import ModelServer, model_server_running
from harness.repository import SERVED, build_repository, copy_repository


@pytest.fixture(scope="session")
def pristine_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once; tests that change a repository copy it."""
    return build_repository(tmp_path_factory.mktemp("pristine") / "models")


@pytest.fixture(scope="session")
def model_dir(pristine_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repository(pristine_repository, tmp_path_factory.mktemp("repo") / "models")


@pytest.fixture(scope="session")
def model_server(model_dir: Path, logs_dir: Path) -> Iterator[ModelServer]:
    with model_server_running("model-server", model_dir, logs_dir, SERVED) as server:
        yield server


@pytest.fixture(scope="session")
def gateways_here(
    redis_url: str,
    model_server: ModelServer,
    model_dir: Path,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., AbstractContextManager[Gateway]]:
    """Gateways over the shared model server and repository: ``with gateways_here(name,
    redis_url=…, serving_port=…, model_dir=…, **FDL_settings) as gateway`` (``serving_port``
    None: no model server behind it)."""

    def running(
        name: str,
        redis_url: str = redis_url,
        serving_port: int | None = model_server.port,
        model_dir: Path = model_dir,
        **overrides: str,
    ) -> AbstractContextManager[Gateway]:
        secrets = tmp_path_factory.mktemp(f"secrets-{name}")
        return gateway_running(
            name, logs_dir, redis_url, serving_port, model_dir, secrets, **overrides
        )

    return running


@pytest.fixture(scope="session")
def gateway(gateways_here: Callable[..., AbstractContextManager[Gateway]]) -> Iterator[Gateway]:
    """Keyed classification, a generous rate limit."""
    with gateways_here("gateway") as running:
        # Label digits v1 "stable" through the API: it stays loaded beside the latest, v2.
        response = set_label(running, "digits", "stable", {"version": 1})
        assert response.status_code == 200, response.text
        yield running


@pytest.fixture(scope="module")
def more_gateways(
    gateways_here: Callable[..., AbstractContextManager[Gateway]],
) -> Iterator[Callable[..., Gateway]]:
    """Starts gateways beside the shared one (the arguments of ``gateways_here``); all stop
    when the module ends."""
    with ExitStack() as started:

        def start(name: str, **kwargs: Any) -> Gateway:
            return started.enter_context(gateways_here(name, **kwargs))

        yield start


@pytest.fixture(scope="session")
def route_model_server(
    pristine_repository: Path, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """A model server over a repository of its own, for the in-process route tests: their
    promotions must not move the labels the process-level tests assert."""
    repo = copy_repository(pristine_repository, tmp_path_factory.mktemp("routes") / "models")
    with model_server_running("model-server-routes", repo, logs_dir, SERVED) as server:
        yield server
