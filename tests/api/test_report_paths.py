"""What anyone may read about a version names no folder of the worker's machine: metadata.json
(through the report route) and the model listing show paths relative, by their last component."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fdl import contract
from harness.gateway import Gateway

SECRET_ROOT = "/home/alice/private-datasets"


@pytest.fixture
def leaky_metadata(model_dir: Path) -> Iterator[dict[str, Any]]:
    """photos version 1's metadata.json as a worker writes it: absolute dataset and cache paths."""
    path = model_dir / "photos" / "1" / contract.METADATA_FILE
    original = path.read_text()
    metadata = {
        **json.loads(original),
        "dataset": {"name": "cifar10", "source": f"{SECRET_ROOT}/cifar10", "train": 500},
        "runtime": {"cache": [f"{SECRET_ROOT}/var/cache/datasets/cifar10-jpeg", "C:\\data\\x"]},
        "note": "a/relative/path stays /as it is",
    }
    path.write_text(json.dumps(metadata))
    try:
        yield metadata
    finally:
        path.write_text(original)


def test_report_route_serves_metadata_without_absolute_paths(
    gateway: Gateway, leaky_metadata: dict[str, Any]
) -> None:
    url = f"{gateway.url}/v1/models/photos/versions/1/report/metadata.json"
    response = httpx.get(url, headers=gateway.classifier(), timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert SECRET_ROOT not in response.text and "C:\\\\data" not in response.text
    served = response.json()
    assert served["dataset"] == {"name": "cifar10", "source": "cifar10", "train": 500}
    assert served["runtime"] == {"cache": ["cifar10-jpeg", "x"]}
    # Everything else, relative paths included, as written.
    rest = {k: v for k, v in leaky_metadata.items() if k not in ("dataset", "runtime")}
    assert {k: served[k] for k in rest} == rest


def test_model_listing_shows_the_dataset_without_absolute_paths(
    gateway: Gateway, leaky_metadata: dict[str, Any]
) -> None:
    response = httpx.get(f"{gateway.url}/v1/models/photos", headers=gateway.classifier())
    assert response.status_code == 200, response.text
    assert SECRET_ROOT not in response.text
    version = next(v for v in response.json()["versions"] if v["version"] == 1)
    assert version["metadata"]["dataset"]["source"] == "cifar10"


@pytest.mark.parametrize(
    "path",
    [
        # Versions beyond what any route accepts (2**62), however many digits: 422, not a 500
        # from a file name too long or a protobuf int64 out of range.
        "/v1/models/photos/versions/" + "9" * 300 + "/report/metadata.json",
        "/v1/models/photos/versions/4611686018427387905/report/metadata.json",
    ],
)
def test_report_versions_are_bounded(gateway: Gateway, path: str) -> None:
    response = httpx.get(f"{gateway.url}{path}", headers=gateway.classifier(), timeout=10)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "query", ["version=9223372036854775808", "version=0", "label=42", "label=a%0A"]
)
def test_preprocess_parameters_are_validated_in_full(gateway: Gateway, query: str) -> None:
    # The parameters are refused before the body is read: any body will do.
    response = httpx.post(
        f"{gateway.url}/v1/models/photos:preprocess?{query}",
        files={"file": ("a.png", b"\x89PNG", "image/png")},
        headers=gateway.classifier(),
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def test_report_with_non_finite_numbers_is_served_with_nulls(
    gateway: Gateway, model_dir: Path
) -> None:
    """Python's json.dumps writes NaN and Infinity (a loss that overflowed, a file from another
    tool); JSON cannot carry them, so the report route answered 500 for such a file."""
    path = model_dir / "photos" / "1" / contract.ASSETS_EXTRA_DIR / "evaluation.json"
    path.write_text('{"test_loss": NaN, "scores": [Infinity, -Infinity, 1e999, 0.5], "n": 3}')
    try:
        url = f"{gateway.url}/v1/models/photos/versions/1/report/evaluation.json"
        response = httpx.get(url, headers=gateway.classifier(), timeout=10)
    finally:
        path.unlink()
    assert response.status_code == 200, response.text
    assert response.json() == {"test_loss": None, "scores": [None, None, None, 0.5], "n": 3}


@pytest.mark.parametrize("job_id", [42, {"id": "x"}, ["x"], True])
def test_model_listing_survives_a_job_id_that_is_not_text(
    gateway: Gateway, model_dir: Path, job_id: object
) -> None:
    """metadata.json edited by hand or written by another tool: the listing shows no job rather
    than answering 500 for every model (the response's schema wants text)."""
    path = model_dir / "photos" / "1" / contract.METADATA_FILE
    original = path.read_text()
    path.write_text(json.dumps({**json.loads(original), "job_id": job_id}))
    try:
        listing = httpx.get(f"{gateway.url}/v1/models", headers=gateway.classifier(), timeout=10)
        one = httpx.get(f"{gateway.url}/v1/models/photos", headers=gateway.classifier(), timeout=10)
    finally:
        path.write_text(original)
    assert listing.status_code == one.status_code == 200, listing.text + one.text
    version = next(v for v in one.json()["versions"] if v["version"] == 1)
    assert version["job_id"] is None
