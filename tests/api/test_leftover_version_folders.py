"""Numbered folders that hold no model (thousands left empty by an operator's script, one half
copied in) are no versions to the gateway, as they are none to the model server
(``serving/versions.py``): :func:`fdl.repository_reads.version_folders` checks for a graph too.

Over a real model server and a real gateway of this module's own, the model ``photos`` holds its
one real version and ``JUNK`` empty numbered folders: the listing shows one version, quickly; a
promotion to an empty folder's number is refused as one to a missing number, a rollback does not
take an empty folder for an older version, the config the promotion renders serves the real
version only, and the next publish still steps over every numbered folder (its rename would
fail onto one that is not empty).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import text_format

from fdl.repository import CONFIG_FILE, Repository
from fdl.wire.tfs_pb2 import ModelServerConfig
from harness.gateway import Gateway, classify, set_label
from harness.model_server import ModelServer, model_server_running
from harness.repository import SERVED, copy_repository

JUNK = 2000  # empty folders 2 .. JUNK + 1 (the hunter's 20,000 took 2.3-5 s; this, under 0.1 s)
HALF_COPIED = JUNK + 100  # the newest number: files being copied in, no saved_model.pb yet
MISSING = JUNK + 1000  # no folder at all


@pytest.fixture(scope="module")
def repository(pristine_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = copy_repository(pristine_repository, tmp_path_factory.mktemp("junk") / "models")
    photos = model_dir / "photos"
    for number in range(2, JUNK + 2):
        (photos / str(number)).mkdir()
    (photos / str(HALF_COPIED) / "variables").mkdir(parents=True)
    (photos / str(HALF_COPIED) / "assets.extra").mkdir()
    (photos / str(HALF_COPIED) / "assets.extra" / "metadata.json").write_text("{}")
    (photos / "0").mkdir()  # older than the real version: nothing to roll back to
    return model_dir


@pytest.fixture(scope="module")
def server(repository: Path, logs_dir: Path) -> Iterator[ModelServer]:
    with model_server_running("model-server-junk", repository, logs_dir, SERVED) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(
    gateways_here: Callable[..., AbstractContextManager[Gateway]],
    server: ModelServer,
    repository: Path,
) -> Iterator[Gateway]:
    # A version that never loads fails a promotion after this, not after a minute.
    with gateways_here(
        "gateway-junk", serving_port=server.port, model_dir=repository, FDL_PROMOTE_TIMEOUT_S="5"
    ) as up:
        yield up


def get(gateway: Gateway, path: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = httpx.get(f"{gateway.url}{path}", headers=gateway.admin(), timeout=60)
    return response, time.perf_counter() - started


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_the_listing_shows_the_one_real_version_quickly(gateway: Gateway) -> None:
    get(gateway, "/v1/models")  # the first call of a fresh gateway warms its connections
    listing, listing_s = get(gateway, "/v1/models")
    assert listing.status_code == 200, listing.text
    models = {m["name"]: m for m in listing.json()["models"]}
    detail, detail_s = get(gateway, "/v1/models/photos")
    assert detail.status_code == 200, detail.text
    for photos in (models["photos"], detail.json()):
        versions = photos["versions"]
        assert [v["version"] for v in versions] == [1], len(versions)
        assert versions[0]["state"] == "AVAILABLE" and versions[0]["pending"] is False
        assert photos["repository_error"] is None
    # Generous for a loaded machine: one scandir and two stats a folder take milliseconds.
    assert listing_s < 2 and detail_s < 2, (listing_s, detail_s)


def test_routes_treat_an_empty_folder_as_a_missing_version(
    gateway: Gateway, repository: Path
) -> None:
    # Promoting to an empty folder's number: refused as a number with no folder at all.
    empty = set_label(gateway, "photos", "canary", {"version": 7})
    missing = set_label(gateway, "photos", "canary", {"version": MISSING})
    assert error_of(empty) == error_of(missing) == (404, "version_not_found"), empty.text
    assert "has no version 7 on disk" in empty.json()["error"]["message"]
    half = set_label(gateway, "photos", "canary", {"version": HALF_COPIED})
    assert error_of(half) == (404, "version_not_found"), half.text

    # Classifying by that number: the model server's answer for a version it does not have.
    by_version = [
        classify(f"{gateway.url}/v1/models/photos/versions/{n}:classify", gateway.classifier())
        for n in (7, MISSING)
    ]
    assert error_of(by_version[0]) == error_of(by_version[1]), by_version[0].text
    assert by_version[0].status_code == 404, by_version[0].text

    # A label on the real version: the config serves it, and no empty folder beside it.
    assert set_label(gateway, "photos", "stable", {"version": 1}).status_code == 200
    config = text_format.Parse((repository / CONFIG_FILE).read_text(), ModelServerConfig())
    (entry,) = [m for m in config.model_config_list.config if m.name == "photos"]
    assert list(entry.model_version_policy.specific.versions) == [1]
    assert dict(entry.version_labels) == {"stable": 1}

    # Rolling back: the empty folder 0 is not an older version.
    back = httpx.post(
        f"{gateway.url}/v1/models/photos/labels/stable:rollback",
        headers=gateway.admin(),
        timeout=60,
    )
    assert error_of(back) == (409, "no_older_version"), back.text

    photos: dict[str, Any] = get(gateway, "/v1/models/photos")[0].json()
    assert photos["labels"] == {"stable": 1}
    assert [v["version"] for v in photos["versions"]] == [1]


def test_a_publish_steps_over_every_numbered_folder(repository: Path) -> None:
    """Not versions, but their names are taken: a new version renamed onto the half-copied
    folder would fail (it is not empty), so the next number is past all of them."""
    assert Repository(repository).next_version("photos", {}) == HALF_COPIED + 1
