"""Numbered folders that hold no model (thousands left empty by an operator's script, one half
copied in) are no versions to the gateway, as they are none to the model server
(``serving/versions.py``): :func:`fdl.repository_reads.version_folders` checks for a graph too.

Over a real model server and a real gateway of this module's own, the model ``photos`` holds its
one real version and ``JUNK`` empty numbered folders: the listing shows one version, quickly; a
promotion to an empty folder's number is refused as one to a missing number, a rollback does not
take an empty folder for an older version, the config the promotion renders serves the real
version only, and the next publish still steps over every numbered folder (its rename would
fail onto one that is not empty).

The model ``padded`` holds one version in a folder named ``05``, which the model server serves as
version 5: the gateway reads its metadata.json, recorded profile and report files from that folder
too (before, from ``5``: none of them), and a publish's idempotency check finds its job there.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import text_format

from fdl import contract
from fdl.repository import CONFIG_FILE, Repository, sync_config
from fdl.repository_reads import find_job_version, version_dir, version_paths
from fdl.wire.tfs_pb2 import ModelServerConfig
from harness.gateway import BLANK_PNG, Gateway, classify, set_label
from harness.model_server import ModelServer, model_server_running
from harness.repository import SERVED, TRAINING_METADATA, copy_repository
from serving.versions import scan_versions

JUNK = 2000  # empty folders 2 .. JUNK + 1 (the hunter's 20,000 took 2.3-5 s; this, under 0.1 s)
HALF_COPIED = JUNK + 100  # the newest number: files being copied in, no saved_model.pb yet
MISSING = JUNK + 1000  # no folder at all
PADDED = "padded"  # its one version, 5, in the folder 05
# A 1-channel model that records the photo profile: by channel count it would get digit.
PADDED_METADATA = {
    **TRAINING_METADATA,
    "job_id": "job-padded",
    "model": PADDED,
    contract.PROFILE_KEY: contract.PHOTO_PROFILE,
}


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
    padded = model_dir / PADDED / "05"
    shutil.copytree(model_dir / "digits" / "2", padded)
    (padded / contract.METADATA_FILE).write_text(json.dumps(PADDED_METADATA))
    (padded / contract.ASSETS_EXTRA_DIR / "confusion.png").write_bytes(BLANK_PNG)
    sync_config(model_dir)  # the config serves it too
    return model_dir


@pytest.fixture(scope="module")
def server(repository: Path, logs_dir: Path) -> Iterator[ModelServer]:
    wanted = {**SERVED, PADDED: 5}
    with model_server_running("model-server-junk", repository, logs_dir, wanted) as up:
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


def test_a_version_in_a_zero_padded_folder_is_read_from_it(
    gateway: Gateway, repository: Path
) -> None:
    """``05`` is version 5 to the model server; its metadata, recorded profile and report are
    read from there, as a publish's idempotency check reads its job."""
    listing = get(gateway, "/v1/models")[0]
    assert listing.status_code == 200, listing.text
    models = {m["name"]: m for m in listing.json()["models"]}
    detail = get(gateway, f"/v1/models/{PADDED}")[0]
    assert detail.status_code == 200, detail.text
    for padded in (models[PADDED], detail.json()):
        (version,) = padded["versions"]
        assert version["version"] == 5 and version["state"] == "AVAILABLE", version
        assert version["job_id"] == "job-padded"
        assert version["class_names"] == PADDED_METADATA["class_names"]
        assert version["metrics"] == PADDED_METADATA["metrics"]
        assert version["metadata"]["architecture"] == PADDED_METADATA["architecture"]
    # The profile classification uses, read (in the metadata cache) from 05/'s metadata.json.
    assert detail.json()["input"]["version"] == 5
    assert detail.json()["input"]["profile"] == contract.PHOTO_PROFILE

    for url in (f"{PADDED}/versions/5:classify", f"{PADDED}:classify"):
        answer = classify(f"{gateway.url}/v1/models/{url}", gateway.classifier())
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 5
        # Labelled with the class names the model holds, under the photo profile.
        assert answer.json()["predictions"][0]["label"] in PADDED_METADATA["class_names"]

    report = httpx.get(
        f"{gateway.url}/v1/models/{PADDED}/versions/5/report/confusion.png",
        headers=gateway.classifier(),
        timeout=60,
    )
    assert report.status_code == 200, report.text
    assert report.content == BLANK_PNG

    assert find_job_version(repository / PADDED, "job-padded") == 5


def test_one_version_maps_to_the_folder_the_listing_names(tmp_path: Path) -> None:
    """:func:`version_dir` (no listing) agrees with :func:`version_paths` (the model server's
    choice): of the names of one version holding a graph, the last in byte order."""
    for name in ("005", "05", "00", "0", "7", "07"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").touch()
    (tmp_path / "5").mkdir()  # empty: no version
    listed = version_paths(tmp_path)
    assert {v: p.name for v, p in listed.items()} == {0: "00", 5: "05", 7: "7"}
    for version, folder in listed.items():
        assert version_dir(tmp_path, version) == folder
    assert version_dir(tmp_path, 9) == tmp_path / "9"  # none: the name a publish writes


def test_a_symlink_loop_is_no_version_as_to_the_model_server(tmp_path: Path) -> None:
    """A version-named symlink loop (ELOOP: it cannot be looked into, but is no folder) is no
    version to the model server (``Path.is_dir`` is False), so none to the listing either, and
    :func:`version_dir` takes the folder beside it as the listing does (before, the listing
    counted ``06`` as version 6, unreadable, while ``version_dir`` took ``6``)."""
    for name in ("1", "5"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").touch()
    (tmp_path / "6").mkdir()  # empty: no version
    (tmp_path / "05").symlink_to("05")
    (tmp_path / "06").symlink_to("06")
    server = {v: p.name for v, p in scan_versions(tmp_path).items()}
    assert server == {1: "1", 5: "5"}
    unreadable: dict[Path, OSError] = {}
    assert {v: p.name for v, p in version_paths(tmp_path, unreadable).items()} == server
    assert unreadable == {}
    assert version_dir(tmp_path, 5) == tmp_path / "5"
    assert version_dir(tmp_path, 6) == tmp_path / "6"  # none: the name a publish writes
