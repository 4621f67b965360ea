"""Headers every answer carries, and the Host names a gateway answers to (api/middleware.py).

* ``X-Content-Type-Options: nosniff`` on every answer (before: only the UI's files).
* ``Cache-Control: no-store`` on the answer to any request that carried a key (``Authorization``
  or ``X-API-Key``) and on every job route's: job specs and errors must not land in a shared
  cache or the browser's disk cache. A route's own value gives way to it (one header, not two).
* ``FDL_ALLOWED_HOSTS``: a page on attacker.example whose name resolves to 127.0.0.1 (DNS
  rebinding) must not read a laptop's `fdl up` gateway: a Host header not listed gets 400
  ``host_not_allowed``; ``/healthz`` and ``/readyz`` answer whatever the Host (the kubelet's
  probes name the pod's address). `fdl up` lists the loopback names when it binds the gateway to
  a loopback address (fdl/stack.py), unless the user set the variable.

Real gateways over the shared model server and Redis.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import GatewaySettings
from fdl.settings import CommonSettings
from fdl.stack import plan_stack
from harness.gateway import ADMIN_KEY, CLASSIFY_KEY, Gateway, bearer, classify, inprocess_settings
from harness.model_server import ModelServer

LOOPBACK = "localhost,127.0.0.1,[::1]"
CLASSIFY = "/v1/models/digits:classify"


def values(response: httpx.Response, name: str) -> list[str]:
    return response.headers.get_list(name)


def raw_head(url: str, request_line: str, *headers: str) -> tuple[int, httpx.Headers]:
    """The status and headers of the answer to a hand-written request (httpx sends no
    Content-Length its body does not have)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = "\r\n".join([f"{request_line} HTTP/1.1", f"Host: {parts.netloc}", *headers])
        sock.sendall(f"{head}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    status_line, *lines = answer.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    pairs = [tuple(line.split(": ", 1)) for line in lines]
    return int(status_line.split()[1]), httpx.Headers(pairs)


def test_every_answer_is_nosniff_and_keyed_or_job_answers_no_store(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        health = client.get("/healthz")
        models = client.get("/v1/models")
        keyed_models = client.get("/v1/models", headers={"X-API-Key": CLASSIFY_KEY})
        jobs = client.get("/v1/jobs", headers=bearer(ADMIN_KEY))
        jobs_refused = client.get("/v1/jobs")  # a job route's JSON, here a 401
        job_missing = client.get("/v1/jobs/nosuchjob", headers={"X-API-Key": ADMIN_KEY})
        unknown = client.get("/no/such/route")
        page = client.get("/ui/")
        keyed_page = client.get("/ui/", headers={"X-API-Key": ADMIN_KEY})
    classified = classify(f"{gateway.url}{CLASSIFY}", headers=bearer(CLASSIFY_KEY))
    anonymous = classify(f"{gateway.url}{CLASSIFY}")  # 401: this gateway's classification is keyed
    assert (health.status_code, jobs_refused.status_code, job_missing.status_code) == (
        200,
        401,
        404,
    )
    assert classified.status_code == 200 and anonymous.status_code == 401, classified.text
    # Refused by the middleware itself, from Content-Length, before any body is read.
    too_large = raw_head(gateway.url, f"POST {CLASSIFY}", "Content-Length: 1000000000000")
    assert too_large[0] == 413
    every = [health, models, keyed_models, jobs, jobs_refused, job_missing, unknown, page]
    for response in [*every, keyed_page, classified, anonymous]:
        assert values(response, "x-content-type-options") == ["nosniff"], response.request.url
    for response in (keyed_models, jobs, jobs_refused, job_missing, keyed_page, classified):
        assert values(response, "cache-control") == ["no-store"], response.request.url
    for response in (health, models, unknown, anonymous):
        assert "cache-control" not in response.headers, response.request.url
    assert too_large[1].get_list("x-content-type-options") == ["nosniff"]
    assert "cache-control" not in too_large[1]
    assert values(page, "cache-control") == ["no-cache"]  # the UI's own, without a key


def test_an_event_stream_keeps_one_no_store(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        created = client.post(
            "/v1/jobs", json={"model": "mnist_logreg", "epochs": 1}, headers=gateway.admin()
        )
        assert created.status_code == 202, created.text
        job = created.json()["id"]
        client.delete(f"/v1/jobs/{job}", headers=gateway.admin())  # ends it: a finite stream
        with client.stream("GET", f"/v1/jobs/{job}/events", headers=gateway.admin()) as events:
            assert events.status_code == 200
            assert values(events, "cache-control") == ["no-store"]
            assert values(events, "x-content-type-options") == ["nosniff"]


@pytest.fixture(scope="module")
def loopback_only(more_gateways: Callable[..., Gateway]) -> Gateway:
    return more_gateways("gateway-loopback-hosts", FDL_ALLOWED_HOSTS=LOOPBACK)


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1:1", "[::1]:8000"])
def test_listed_hosts_are_answered(loopback_only: Gateway, host: str) -> None:
    response = httpx.get(
        f"{loopback_only.url}/v1/models",
        headers={"Host": host, **loopback_only.classifier()},
        timeout=30,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:8000", "localhost.attacker.example", "[::2]"]
)
def test_other_hosts_get_400_naming_the_setting(loopback_only: Gateway, host: str) -> None:
    with httpx.Client(base_url=loopback_only.url, timeout=30) as client:
        for path in ("/v1/models", "/ui/", "/v1/jobs", "/metrics", "/openapi.json"):
            response = client.get(path, headers={"Host": host, **loopback_only.admin()})
            assert response.status_code == 400, (path, response.text)
            error = response.json()["error"]
            assert error["code"] == "host_not_allowed"
            assert "FDL_ALLOWED_HOSTS" in error["message"] and repr(host) in error["message"]
            assert values(response, "x-content-type-options") == ["nosniff"]
        refused = classify(f"{loopback_only.url}{CLASSIFY}", headers={"Host": host})
        assert refused.status_code == 400 and "host_not_allowed" in refused.text
        # The probes name the pod's address: they are answered whatever the Host.
        for probe in ("/healthz", "/readyz"):
            assert client.get(probe, headers={"Host": host}).status_code == 200


def test_any_host_by_default(gateway: Gateway) -> None:
    assert GatewaySettings.model_fields["allowed_hosts"].default == "*"
    response = httpx.get(
        f"{gateway.url}/v1/models",
        headers={"Host": "attacker.example", **gateway.classifier()},
        timeout=30,
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "value", ["localhost:8000", "::1", "[::1]:8000", "*,localhost", " , ", "bücher.example"]
)
def test_a_setting_that_never_matches_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        GatewaySettings(allowed_hosts=value)


def stack_settings(tmp: Path, host: str) -> CommonSettings:
    return CommonSettings(
        model_dir=tmp / "var" / "models",
        var_dir=tmp / "var",
        data_dir=tmp / "var" / "data",
        redis_url="redis://127.0.0.1:1/0",
        api_keys="admin-key-for-stack-tests",
        gateway_host=host,
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", LOOPBACK),
        ("localhost", LOOPBACK),
        ("::1", LOOPBACK),
        ("127.0.0.2", f"{LOOPBACK},127.0.0.2"),
        ("0.0.0.0", None),  # served to the network: any name it is reached by
        ("192.0.2.7", None),
    ],
)
def test_fdl_up_lists_the_loopback_names_for_a_loopback_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, expected: str | None
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    monkeypatch.delenv("FDL_ALLOWED_HOSTS", raising=False)
    env = plan_stack(stack_settings(tmp_path, host)).env
    assert env.get("FDL_ALLOWED_HOSTS") == expected
    if expected is not None:
        GatewaySettings(allowed_hosts=expected)  # one the gateway accepts


def test_fdl_up_keeps_the_users_own_allowed_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FDL_ALLOWED_HOSTS", "*")
    assert "FDL_ALLOWED_HOSTS" not in plan_stack(stack_settings(tmp_path, "127.0.0.1")).env
    monkeypatch.delenv("FDL_ALLOWED_HOSTS")
    (tmp_path / ".env").write_text("FDL_ALLOWED_HOSTS=fdl.lan\n")
    assert "FDL_ALLOWED_HOSTS" not in plan_stack(stack_settings(tmp_path, "127.0.0.1")).env


def test_an_unexpected_error_is_nosniff_and_no_store(
    redis_url: str, route_model_server: ModelServer
) -> None:
    """Starlette's outermost error middleware answers a bug's 500 outside the gateway's
    middleware: its handler adds the headers itself."""
    app = create_app(inprocess_settings(redis_url, route_model_server, database=3))

    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken")
    assert response.status_code == 500, response.text
    assert values(response, "x-content-type-options") == ["nosniff"]
    assert values(response, "cache-control") == ["no-store"]
