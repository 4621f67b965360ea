"""Operations: probes, metrics, OpenAPI, no TensorFlow in the process, upstream failures."""

from __future__ import annotations

import re
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from harness import gateway as harness_gateway
from harness.gateway import Gateway
from harness.model_server import ModelServer
from harness.procs import REPO_ROOT
from harness.prometheus import samples, total


def classify(gateway: Gateway, model: str = "digits") -> httpx.Response:
    url = f"{gateway.url}/v1/models/{model}:classify"
    return harness_gateway.classify(url, gateway.classifier())


def test_probes(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "model_server": "ok"}


def test_metrics(gateway: Gateway) -> None:
    assert classify(gateway).status_code == 200
    assert classify(gateway, "no_such_model").status_code == 404
    refused = harness_gateway.classify(f"{gateway.url}/v1/models/no_key_model:classify")
    assert refused.status_code == 401  # this gateway requires a key to classify
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    route = "/v1/models/{model}:classify"
    requests = "fdl_gateway_requests_total"
    ok = total(text, requests, method="POST", model="digits", route=route, status="200")
    assert ok >= 1
    # Names that are not served are not labels (attackers could create unbounded series).
    assert "no_such_model" not in text and "no_key_model" not in text
    assert samples(text, requests, model="", route=route, status="404")
    for stage in ("decode", "preprocess", "predict", "postprocess"):
        assert samples(text, "fdl_gateway_stage_seconds_count", model="digits", stage=stage)
    upstream = "fdl_gateway_upstream_errors_total"
    assert samples(text, upstream, code="NOT_FOUND", method="GetModelMetadata")
    assert samples(text, "fdl_jobs", state="queued")
    assert samples(text, "fdl_gateway_images_classified_total")


def test_openapi_document(gateway: Gateway) -> None:
    schema = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    paths = schema["paths"]
    for path in (
        "/v1/models/{model}:classify",
        "/v1/models/{model}/versions/{version}:classify",
        "/v1/models/{model}/labels/{label}:classify",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/models/{model}/labels/{label}",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/events",
    ):
        assert path in paths
    classify_op = paths["/v1/models/{model}:classify"]["post"]
    assert "example" in classify_op["requestBody"]["content"]["application/json"]
    assert {"413", "415", "422", "429", "503"} <= set(classify_op["responses"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert httpx.get(f"{gateway.url}/docs", timeout=10).status_code == 200


def test_gateway_process_has_no_tensorflow(gateway: Gateway) -> None:
    """The running gateway maps no TensorFlow library, after real classifications."""
    for _ in range(20):
        assert classify(gateway).status_code == 200
    maps = Path(f"/proc/{gateway.process.pid}/maps").read_text()
    assert "libtensorflow" not in maps and "_pywrap_tensorflow" not in maps
    assert "site-packages/PIL" in maps  # the check can see native extensions at all
    rss_mb = psutil.Process(gateway.process.pid).memory_info().rss / 2**20
    print(f"gateway RSS after warm-up: {rss_mb:.0f} MB")
    assert rss_mb < 150


def _start_up_imports_none_of(start: str, packages: tuple[str, ...]) -> None:
    """A fresh interpreter imports the gateway and runs ``start`` (``app`` is the app built from
    default settings); it fails when any of ``packages`` was imported."""
    import subprocess

    code = (
        "import sys, api.main, api.__main__\n"
        "from api.settings import GatewaySettings\n"
        "app = api.main.create_app(GatewaySettings())\n"
        f"{start}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {packages!r})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)


def test_gateway_modules_import_without_tensorflow() -> None:
    _start_up_imports_none_of(
        "app.openapi()", ("tensorflow", "keras", "tensorflow_serving", "tf_keras")
    )


def test_start_up_leaves_job_and_retry_libraries_unimported() -> None:
    """Celery (job submission) and tenacity (retries) load on first use, not at start-up."""
    _start_up_imports_none_of("", ("celery", "kombu", "tenacity"))


def test_api_extra_does_not_pull_tensorflow() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["api"]
    names = [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements]
    assert not [n for n in names if "tensorflow" in n or n in ("keras", "tf-keras")]


@pytest.fixture(scope="module")
def orphan_gateway(more_gateways: Callable[..., Gateway]) -> Gateway:
    """A gateway whose model server is not there."""
    return more_gateways("gateway-orphan", serving_port=None)


def test_model_server_down_is_503(orphan_gateway: Gateway) -> None:
    ready = httpx.get(f"{orphan_gateway.url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["model_server"] == "unavailable"
    response = classify(orphan_gateway)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_server_unavailable"
    assert response.headers["retry-after"] == "1"
    listing = httpx.get(
        f"{orphan_gateway.url}/v1/models", headers=orphan_gateway.classifier(), timeout=10
    )
    assert listing.status_code == 200  # the repository is still listed, with the error
    assert all(m["server_error"] for m in listing.json()["models"])
    promote = httpx.post(
        f"{orphan_gateway.url}/v1/models/promo/labels/stable",
        json={"version": 1},
        headers=orphan_gateway.admin(),
        timeout=30,
    )
    assert promote.status_code == 503


def test_deadline_exceeded_is_504(
    model_server: ModelServer, more_gateways: Callable[..., Gateway]
) -> None:
    """A model server that is connected but frozen (SIGSTOP): the call's deadline ends it."""
    impatient = more_gateways(
        "gateway-impatient", FDL_PREDICT_TIMEOUT_S="0.5", FDL_METADATA_TIMEOUT_S="0.5"
    )
    assert httpx.get(f"{impatient.url}/readyz", timeout=10).status_code == 200  # connected
    model_server.process.signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        response = classify(impatient)
        elapsed = time.monotonic() - start
    finally:
        model_server.process.signal(signal.SIGCONT)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "model_server_timeout"
    assert elapsed < 5
    assert classify(impatient).status_code == 200  # and it recovers
