"""The walking skeleton, end to end: `fdl up`, a job over HTTP, a served model, classification."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from fdl import contract
from harness.gateway import classify as post_image
from harness.mnist import mnist_test_digits, png_bytes
from harness.procs import Process, free_port, wait_for, wait_http
from harness.stack import RunningStack, redis_url_of, submit_job, wait_job

JOB = {
    "model": "mnist_logreg",
    "epochs": 2,
    "max_train_examples": 12_000,
    "validation_split": 1_000,
    "optimizer": {"name": "adam", "learning_rate": 0.01},
}


@pytest.fixture(scope="module")
def trained(stack: RunningStack) -> dict:
    job = wait_job(stack, submit_job(stack, JOB), timeout=300)
    assert job["status"] == "succeeded", job
    return job


def classify(
    stack: RunningStack, model: str, files: list[tuple[str, bytes, str]]
) -> httpx.Response:
    parts = [("file", f) for f in files]
    return httpx.post(f"{stack.url}/v1/models/{model}:classify", files=parts, timeout=30)


def test_jobs_need_an_admin_key(stack: RunningStack) -> None:
    assert httpx.post(f"{stack.url}/v1/jobs", json=JOB, timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    response = httpx.post(f"{stack.url}/v1/jobs", json=JOB, headers=wrong, timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_bad_job_spec_is_rejected_with_the_field_named(stack: RunningStack) -> None:
    bad = {"model": "mnist_logreg", "epochs": 0}
    response = httpx.post(f"{stack.url}/v1/jobs", json=bad, headers=stack.admin(), timeout=5)
    assert response.status_code == 422
    assert "epochs" in response.json()["error"]["message"]


def test_job_result_and_progress(trained: dict) -> None:
    result = trained["result"]
    assert result["model"] == "mnist_logreg"
    assert result["version"] == 1
    assert result["metrics"]["test_accuracy"] > 0.85
    assert trained["progress"]["epoch"] == trained["progress"]["epochs"] == 2


def test_published_version_is_complete_and_loads_with_the_session_loader(
    stack: RunningStack, trained: dict
) -> None:
    import tensorflow as tf

    model_path = stack.model_dir / "mnist_logreg"
    versions = sorted(p.name for p in model_path.iterdir() if not p.name.startswith("."))
    assert versions == ["1"], "only complete, integer-named versions may appear"
    export = model_path / "1"
    assert (export / "saved_model.pb").exists()
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, [contract.SERVE_TAG], str(export)
        )
        signature = meta_graph.signature_def[contract.SIGNATURE_NAME]
        assert set(signature.inputs) == {contract.INPUT_KEY}
        assert set(signature.outputs) == {contract.SCORES_KEY, contract.CLASSES_KEY}


def test_classify_real_mnist_digits_as_png(
    stack: RunningStack, trained: dict, data_dir: Path
) -> None:
    images, labels = mnist_test_digits(data_dir, 40)
    files = [(f"{i}.png", png_bytes(image), "image/png") for i, image in enumerate(images)]

    def served() -> httpx.Response | None:
        response = classify(stack, "mnist_logreg", files[:1])
        return response if response.status_code == 200 else None

    # The model server discovers the new version by polling the repository.
    wait_for(served, 60, "the model server to serve version 1", interval=0.5)
    response = classify(stack, "mnist_logreg", files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "mnist_logreg" and body["version"] == 1
    predicted = np.array([p["class_id"] for p in body["predictions"]])
    assert [p["label"] for p in body["predictions"]] == [str(c) for c in predicted]
    accuracy = float((predicted == labels).mean())
    assert accuracy >= 0.8, f"only {accuracy:.0%} of real test digits classified right"
    top = body["predictions"][0]["top_k"]
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"] >= top[2]["score"]


def test_classify_errors(stack: RunningStack, trained: dict) -> None:
    png = png_bytes(np.zeros((28, 28), np.uint8))
    unknown = classify(stack, "no_such_model", [("a.png", png, "image/png")])
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    not_image = classify(stack, "mnist_logreg", [("a.png", b"this is text", "image/png")])
    assert not_image.status_code in (415, 422)
    assert "image" in not_image.json()["error"]["message"]


def test_model_server_down_gives_503(stack: RunningStack, logs_dir: Path) -> None:
    """A gateway whose model server is not there answers 503, and /readyz says not ready."""
    port = free_port()
    env = {
        **stack.env,
        "FDL_GATEWAY_PORT": str(port),
        "FDL_SERVING_GRPC_PORT": str(free_port()),
        "FDL_REDIS_URL": redis_url_of(stack),
        "FDL_API_KEYS": stack.api_key,
    }
    gateway = Process("gateway-without-server", ["fdl-gateway"], logs_dir, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", "the second gateway", gateway, timeout=30)
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        response = post_image(f"{url}/v1/models/mnist_logreg:classify")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_server_unavailable"
        assert "Retry-After" in response.headers
    finally:
        gateway.stop()
