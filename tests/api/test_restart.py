"""A model-server restart during traffic: only 200 or 503, recovery on its own, labels kept."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import gateway as harness_gateway
from harness.gateway import Gateway, gateway_running, set_label
from harness.model_server import ModelServer, start_model_server, wait_for_models
from harness.procs import wait_for
from harness.repository import copy_repository


class Stack:
    """A model server (replaced on restart) and a gateway over a private repository copy."""

    def __init__(self, repo: Path, logs_dir: Path) -> None:
        self.repo = repo
        self.logs_dir = logs_dir
        self.server = start_model_server("model-server-restart", repo, logs_dir)
        self.gateway: Gateway | None = None
        self.restarts = 0

    def restart_server(self) -> ModelServer:
        port = self.server.port
        self.server.process.stop()
        self.restarts += 1
        self.server = start_model_server(
            f"model-server-restart-{self.restarts}", self.repo, self.logs_dir, port=port
        )
        return self.server


@pytest.fixture(scope="module")
def stack(
    pristine_repository: Path,
    redis_url: str,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    repo = copy_repository(pristine_repository, tmp_path_factory.mktemp("restart") / "models")
    running = Stack(repo, logs_dir)
    try:
        wait_for_models(running.server, {"digits": 2, "promo": 3})
        secrets = tmp_path_factory.mktemp("secrets-restart")
        with gateway_running(
            "gateway-restart", logs_dir, redis_url, running.server.port, repo, secrets
        ) as gateway:
            running.gateway = gateway
            yield running
    finally:
        running.server.process.stop()


def classify(client: httpx.Client, gateway: Gateway, path: str) -> httpx.Response:
    return harness_gateway.classify(f"{gateway.url}{path}", gateway.classifier(), client=client)


def test_restart_during_traffic(stack: Stack) -> None:
    gateway = stack.gateway
    assert gateway is not None
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                path = "/v1/models/digits:classify"
                statuses[classify(client, gateway, path).status_code] += 1

    workers = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: statuses[200] >= 5, 30, "traffic before the restart")
        stack.server.process.stop()
        wait_for(lambda: statuses[503] >= 3, 30, "503s while the server is down")
        port = stack.server.port
        stack.restarts += 1
        stack.server = start_model_server(
            "model-server-restarted", stack.repo, stack.logs_dir, port
        )
        before = statuses[200]
        # The gateway reconnects by itself: no restart, no intervention.
        wait_for(
            lambda: statuses[200] >= before + 5,
            120,
            "classification to recover",
            check=stack.server.process.ensure_alive,
        )
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert set(statuses) <= {200, 503}, statuses


def test_labels_survive_a_model_server_restart(stack: Stack) -> None:
    gateway = stack.gateway
    assert gateway is not None
    promoted = set_label(gateway, "promo", "stable", {"version": 2})
    assert promoted.status_code == 200, promoted.text
    server = stack.restart_server()
    wait_for_models(server, {"promo": 2})
    with httpx.Client(timeout=30) as client:
        response = wait_for(
            lambda: (
                r
                if (
                    r := classify(client, gateway, "/v1/models/promo/labels/stable:classify")
                ).status_code
                == 200
                else None
            ),
            60,
            "the label to be served again",
            check=server.process.ensure_alive,
        )
    assert response.json()["version"] == 2
