"""A model or version folder the gateway may not read (``chmod 000``: another user's export, a
transient permission problem) fails nothing but itself: the listing and the model answer 200
with that version ``UNREADABLE`` (or the model's ``repository_error``), other models are as
before, a promotion of another model goes through and keeps the unreadable model's entry of
``models.config``, and a promotion of that model answers 500 ``repository_error`` naming it.

A real model server (it loaded every version before the folders closed) and a real gateway run
in a process that permissions bind (tests/unprivileged.py): root would read the folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fdl import contract
from fdl.repository import CONFIG_FILE
from harness.gateway import (
    ADMIN_KEY,
    BLANK_PNG,
    Gateway,
    bearer,
    gateway_env,
    post,
    set_label,
    write_keys_file,
)
from harness.mnist import png_bytes
from harness.model_server import model_server_running
from harness.procs import Process, free_port, wait_http
from harness.repository import SERVED, copy_repository
from tests.unprivileged import closed, unprivileged


@pytest.fixture(scope="module")
def closable(
    pristine_repository: Path,
    redis_url: str,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, Path]]:
    """A gateway that permissions bind over a repository (and model server) of its own."""
    prefix = unprivileged()
    root = tmp_path_factory.mktemp("unreadable")
    model_dir = copy_repository(pristine_repository, root / "models")
    with model_server_running("unreadable-model-server", model_dir, logs_dir, SERVED) as server:
        port = free_port()
        env = gateway_env(
            port, redis_url, server.port, model_dir, write_keys_file(root / "secrets")
        )
        argv = [*prefix, sys.executable, "-m", "api"]
        process = Process("unreadable-gateway", argv, logs_dir, env=env)
        gateway = Gateway(process, f"http://127.0.0.1:{port}", env)
        try:
            wait_http(f"{gateway.url}/healthz", "the gateway to start", process)
            yield gateway, model_dir
        finally:
            process.stop()


def _get(gateway: Gateway, path: str) -> httpx.Response:
    return httpx.get(f"{gateway.url}{path}", headers=bearer(ADMIN_KEY), timeout=60)


def _listing(gateway: Gateway) -> dict[str, dict[str, Any]]:
    response = _get(gateway, "/v1/models")
    assert response.status_code == 200, response.text
    return {model["name"]: model for model in response.json()["models"]}


def test_an_unreadable_version_folder_is_shown_unreadable(
    closable: tuple[Gateway, Path],
) -> None:
    gateway, model_dir = closable
    before = _listing(gateway)
    with closed(model_dir / "digits" / "1"):
        models = _listing(gateway)
        single = _get(gateway, "/v1/models/digits")
    assert single.status_code == 200, single.text
    for digits in (models["digits"], single.json()):
        versions = {v["version"]: v for v in digits["versions"]}
        # Version 1 is not served (the newest is): the gateway says why it cannot tell more.
        assert versions[1]["state"] == "UNREADABLE"
        assert versions[1]["error"] == "Permission denied: the version's folder cannot be read"
        assert versions[2]["state"] == "AVAILABLE" and versions[2]["error"] is None
        assert digits["repository_error"] is None
    assert {k: v for k, v in models.items() if k != "digits"} == {
        k: v for k, v in before.items() if k != "digits"
    }


def test_an_unreadable_model_folder_stops_no_other_model(closable: tuple[Gateway, Path]) -> None:
    gateway, model_dir = closable
    config = model_dir / CONFIG_FILE
    with closed(model_dir / "photos"):
        models = _listing(gateway)
        photos = models["photos"]
        assert photos["repository_error"] == (
            "Permission denied: the folder of model 'photos' cannot be listed"
        )
        # What the model server serves is still shown.
        assert [(v["version"], v["state"]) for v in photos["versions"]] == [(1, "AVAILABLE")]
        assert [v["state"] for v in models["promo"]["versions"]] == [
            "NOT_LOADED",
            "NOT_LOADED",
            "AVAILABLE",
        ]
        assert _get(gateway, "/v1/models/photos").status_code == 200

        photos_entry = [line for line in config.read_text().splitlines() if '"photos"' in line]
        promoted = set_label(gateway, "promo", "stable", {"version": 3})
        assert promoted.status_code == 200, promoted.text
        text = config.read_text()
        assert 'key: "stable"' in next(line for line in text.splitlines() if '"promo"' in line)
        assert [line for line in text.splitlines() if '"photos"' in line] == photos_entry

        refused = set_label(gateway, "photos", "stable", {"version": 1})
        assert refused.status_code == 500, refused.text
        error = refused.json()["error"]
        assert error["code"] == "repository_error"
        assert (
            "Permission denied: the folder of model 'photos' cannot be listed" in (error["message"])
        )
        assert config.read_text() == text
    assert _listing(gateway)["promo"]["labels"] == {"stable": 3}


def _entry(config: Path, model: str) -> str:
    [line] = [line for line in config.read_text().splitlines() if f'name: "{model}"' in line]
    return line


def test_a_label_removed_from_an_unreadable_model_leaves_its_entry_too(
    closable: tuple[Gateway, Path],
) -> None:
    """labels.json and models.config never disagree: a label removed while the model's folder
    cannot be listed goes from its kept entry too (the replicas stop serving it), its versions
    kept; before, the route answered 200 and the model servers went on serving the label."""
    gateway, model_dir = closable
    config = model_dir / CONFIG_FILE
    promoted = set_label(gateway, "photos", "canary", {"version": 1})
    assert promoted.status_code == 200, promoted.text
    assert 'key: "canary"' in _entry(config, "photos")
    with closed(model_dir / "photos"):
        removed = httpx.delete(
            f"{gateway.url}/v1/models/photos/labels/canary", headers=bearer(ADMIN_KEY), timeout=60
        )
        assert removed.status_code == 200, removed.text
        entry = _entry(config, "photos")
        assert "version_labels" not in entry, entry
        assert "specific { versions: 1 }" in entry  # what it served stays loaded
        assert _listing(gateway)["photos"]["labels"] == {}
        # The model servers took it: the label is gone there too.
        files = [("file", ("a.png", png_bytes(np.zeros((32, 32, 3), np.uint8)), "image/png"))]
        served = post(gateway, "/v1/models/photos/labels/canary:classify", files=files)
        assert served.status_code == 404, served.text
        assert served.json()["error"]["code"] == "label_not_found"


# Version 5 of ``hidden`` as the gateway's listing, its ``version_dir`` and the model server's own
# rule (``serving/versions.py``, which counts a folder it cannot look into) each name it.
_RULES = """
import json, sys
from pathlib import Path
from fdl.repository_reads import version_dir, version_paths
from serving.versions import scan_versions
path = Path(sys.argv[1])
print(json.dumps([version_dir(path, 5).name, {v: p.name for v, p in version_paths(path).items()},
                  {v: p.name for v, p in scan_versions(path).items()}]))
"""


def test_a_padded_version_closed_to_the_gateway_is_not_read_from_a_leftover(
    closable: tuple[Gateway, Path],
) -> None:
    """Version 5 of ``hidden`` is ``05``, a symlink to an export under a folder closed to the
    gateway (another user's), beside ``5``, a leftover without a graph holding a report of its
    own: every rule takes ``05`` (before, ``version_dir`` took ``5``: ``os.path.isdir`` is False
    where the listing's ``DirEntry.is_dir`` raised), the listing shows it unreadable and its
    report is none (404 ``report_not_found``; with ``05`` taken, before, a 500), never the
    leftover's. A report that is a symlink loop is none either (before, a 500)."""
    gateway, model_dir = closable
    export = model_dir.parent / "elsewhere" / "export"
    (export / contract.ASSETS_EXTRA_DIR).mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"x")
    (export / contract.ASSETS_EXTRA_DIR / "confusion.png").write_bytes(BLANK_PNG)
    leftover = model_dir / "hidden" / "5" / contract.ASSETS_EXTRA_DIR
    leftover.mkdir(parents=True)
    (leftover / "confusion.png").write_bytes(b"\x89PNG\r\n\x1a\nLEFTOVER")
    (model_dir / "hidden" / "05").symlink_to(export)
    looped = model_dir / "loopy" / "1" / contract.ASSETS_EXTRA_DIR
    looped.mkdir(parents=True)
    (looped.parent / "saved_model.pb").write_bytes(b"x")
    (looped / "confusion.png").symlink_to("confusion.png")
    try:
        with closed(export.parent):
            rules = subprocess.run(
                [*unprivileged(), sys.executable, "-c", _RULES, str(model_dir / "hidden")],
                capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
            )  # fmt: skip
            listed = _get(gateway, "/v1/models/hidden")
            report = _get(gateway, "/v1/models/hidden/versions/5/report/confusion.png")
            loop = _get(gateway, "/v1/models/loopy/versions/1/report/confusion.png")
    finally:
        shutil.rmtree(model_dir / "hidden")
        shutil.rmtree(model_dir / "loopy")
        shutil.rmtree(export.parent)
    assert json.loads(rules.stdout) == ["05", {"5": "05"}, {"5": "05"}]
    assert listed.status_code == 200, listed.text
    (version,) = listed.json()["versions"]
    assert version["version"] == 5
    assert version["error"] == "Permission denied: the version's folder cannot be read"
    for answer in (report, loop):
        assert answer.status_code == 404, (answer.status_code, answer.content[:40])
        assert answer.json()["error"]["code"] == "report_not_found"
