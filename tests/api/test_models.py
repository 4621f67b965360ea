"""Models API: repository listing joined with server status; labels promote and roll back."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from fdl.repository import CONFIG_FILE
from fdl.repository_reads import read_labels
from harness.gateway import Gateway, classify, set_label
from harness.model_server import ModelServer, versions_available
from harness.procs import wait_for
from harness.repository import TRAINING_METADATA


def get(gateway: Gateway, path: str) -> httpx.Response:
    return httpx.get(f"{gateway.url}{path}", headers=gateway.classifier(), timeout=10)


def classify_label(gateway: Gateway, model: str, label: str) -> httpx.Response:
    url = f"{gateway.url}/v1/models/{model}/labels/{label}:classify"
    return classify(url, gateway.classifier())


def test_list_models(gateway: Gateway) -> None:
    response = get(gateway, "/v1/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert set(models) == {"digits", "photos", "promo"}
    digits = models["digits"]
    assert digits["labels"] == {"stable": 1}
    versions = {v["version"]: v for v in digits["versions"]}
    assert versions[1]["state"] == versions[2]["state"] == "AVAILABLE"
    assert versions[1]["labels"] == ["stable"] and versions[2]["labels"] == []
    assert versions[2]["job_id"] == TRAINING_METADATA["job_id"]
    assert versions[2]["metrics"] == TRAINING_METADATA["metrics"]
    assert versions[2]["class_names"] == [str(i) for i in range(10)]
    assert "history" not in (versions[2]["metadata"] or {})
    promo = {v["version"]: v for v in models["promo"]["versions"]}
    assert promo[3]["job_id"] is None and promo[3]["metadata"] is None  # no metadata.json
    assert models["photos"]["versions"][0]["class_names"] == ["cat", "dog", "bird"]


def test_get_one_model_with_its_input_spec(gateway: Gateway) -> None:
    digits = get(gateway, "/v1/models/digits").json()
    assert digits["input"] == {
        "version": 2,
        "input_key": "images",
        "dtype": "DT_UINT8",
        "shape": [-1, 28, 28, 1],
        "profile": "digit",
    }
    photos = get(gateway, "/v1/models/photos").json()
    assert photos["input"]["shape"] == [-1, 32, 32, 3]
    assert photos["input"]["profile"] == "photo"


def test_unknown_and_invalid_model_names(gateway: Gateway) -> None:
    missing = get(gateway, "/v1/models/nothing_here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert get(gateway, "/v1/models/Bad.Name").status_code == 422
    assert get(gateway, "/v1/models/%2e%2e").status_code in (404, 422)


def test_promote_an_unloaded_version_then_roll_back(gateway: Gateway, model_dir: Path) -> None:
    # promo serves only its latest (3); version 1 must be loaded before it can be labelled.
    first = set_label(gateway, "promo", "stable", {"version": 1})
    assert first.status_code == 200, first.text
    assert first.json() == {
        "model": "promo",
        "label": "stable",
        "version": 1,
        "previous": None,
        "labels": {"stable": 1},
    }
    assert classify_label(gateway, "promo", "stable").json()["version"] == 1
    canary = set_label(gateway, "promo", "canary", {"version": 3})
    assert canary.json()["labels"] == {"stable": 1, "canary": 3}
    assert classify_label(gateway, "promo", "canary").json()["version"] == 3
    # Persisted for restarts: labels.json and the model server's config file.
    assert read_labels(model_dir)["promo"] == {"stable": 1, "canary": 3}
    config = (model_dir / CONFIG_FILE).read_text()
    assert 'version_labels { key: "stable" value: 1 }' in config
    # Promote 2, then roll back to 1.
    promoted = set_label(gateway, "promo", "stable", {"version": 2})
    assert promoted.json()["previous"] == 1
    assert classify_label(gateway, "promo", "stable").json()["version"] == 2
    rolled_back = set_label(gateway, "promo", "stable", {"version": 1})
    assert rolled_back.json()["previous"] == 2
    assert classify_label(gateway, "promo", "stable").json()["version"] == 1
    listing = get(gateway, "/v1/models/promo").json()
    assert listing["labels"] == {"stable": 1, "canary": 3}
    # Remove the canary label.
    removed = httpx.delete(
        f"{gateway.url}/v1/models/promo/labels/canary", headers=gateway.admin(), timeout=60
    )
    assert removed.status_code == 200 and removed.json()["labels"] == {"stable": 1}
    assert classify_label(gateway, "promo", "canary").status_code == 404
    assert json.loads((model_dir / "labels.json").read_text())["promo"] == {"stable": 1}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"version": 9}, 404, "version_not_found"),
        ({"version": 0}, 422, "invalid_request"),
        ({"version": "two"}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"version": 1, "extra": True}, 422, "invalid_request"),
    ],
)
def test_bad_promotions(gateway: Gateway, body: dict, status: int, code: str) -> None:
    response = set_label(gateway, "promo", "stable", body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_promotion_errors(gateway: Gateway) -> None:
    assert set_label(gateway, "nothing_here", "stable", {"version": 1}).status_code == 404
    assert set_label(gateway, "promo", "Bad Label", {"version": 1}).status_code == 422
    missing = httpx.delete(
        f"{gateway.url}/v1/models/promo/labels/nolabel", headers=gateway.admin(), timeout=10
    )
    assert missing.status_code == 404
    unauthenticated = httpx.post(
        f"{gateway.url}/v1/models/promo/labels/stable", json={"version": 1}, timeout=10
    )
    assert unauthenticated.status_code == 401


def test_roll_back_to_a_retired_version(gateway: Gateway, model_server: ModelServer) -> None:
    """beta -> 2, promote 3: 2 is unloaded; roll back loads 2 again and points beta at it."""
    assert set_label(gateway, "promo", "beta", {"version": 2}).status_code == 200
    assert set_label(gateway, "promo", "beta", {"version": 3}).status_code == 200
    wait_for(
        lambda: 2 not in versions_available(model_server.target, "promo"),
        30,
        "promo version 2 to be unloaded",
        check=model_server.process.ensure_alive,
    )
    rollback = f"{gateway.url}/v1/models/promo/labels/beta:rollback"
    rolled = httpx.post(rollback, headers=gateway.admin(), timeout=60)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version"] == 2 and rolled.json()["previous"] == 3
    assert classify_label(gateway, "promo", "beta").json()["version"] == 2
    assert read_labels(gateway_model_dir(gateway))["promo"]["beta"] == 2
    # Rolled back to 1, nothing older is left: 409 naming why; an unknown label is 404.
    assert httpx.post(rollback, headers=gateway.admin(), timeout=60).json()["version"] == 1
    oldest = httpx.post(rollback, headers=gateway.admin(), timeout=60)
    assert oldest.status_code == 409 and oldest.json()["error"]["code"] == "no_older_version"
    nolabel = f"{gateway.url}/v1/models/promo/labels/nolabel:rollback"
    missing = httpx.post(nolabel, headers=gateway.admin(), timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "label_not_found"
    assert httpx.post(rollback, timeout=10).status_code == 401
    removed = httpx.delete(
        f"{gateway.url}/v1/models/promo/labels/beta", headers=gateway.admin(), timeout=60
    )
    assert removed.status_code == 200


def gateway_model_dir(gateway: Gateway) -> Path:
    return Path(gateway.env["FDL_MODEL_DIR"])
