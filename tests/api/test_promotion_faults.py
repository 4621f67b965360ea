"""Label changes are all or nothing under real faults: a full disk (a small tmpfs, filled), a
read-only file system, a version that fails to load, a corrupt ``labels.json``. After a failed
promotion, rollback or removal, ``labels.json`` and ``models.config`` are exactly as before, so
the next render of the config (a worker's publish) cannot bring the refused label in later, and
the answer is a coded JSON error, never a bare 500. Mounting needs root; skipped without it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fdl.repository import CONFIG_FILE, render_config, sync_config
from fdl.repository_reads import LABELS_FILE, read_labels
from harness.disks import small_tmpfs
from harness.gateway import Gateway, classify, gateway_running, set_label
from harness.model_server import ModelServer, model_server_running, versions_available
from harness.procs import wait_for
from harness.repository import SERVED

# Empty model folders whose long names make models.config longer than a page (4 KiB), while
# labels.json stays within one: with one page free, labels.json can be written, the config not.
PADDING = [f"pad-{i:02d}-" + "x" * 56 for i in range(40)]


@dataclass
class Faulty:
    disk: Path  # the tmpfs mount point
    model_dir: Path
    server: ModelServer
    gateway: Gateway


@pytest.fixture(scope="module")
def faulty(
    pristine_repository: Path,
    redis_url: str,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Faulty]:
    """A model repository on a tmpfs of its own, with its own model server and gateway."""
    root = tmp_path_factory.mktemp("faults")
    with small_tmpfs(root / "disk", "64m") as disk:
        model_dir = disk / "models"
        shutil.copytree(pristine_repository, model_dir)
        for name in PADDING:
            (model_dir / name).mkdir()
        # fragile: version 1 is not a SavedModel (fails to load), version 2 serves.
        shutil.copytree(pristine_repository / "promo" / "1", model_dir / "fragile" / "2")
        shutil.copytree(pristine_repository / "promo" / "1", model_dir / "fragile" / "1")
        (model_dir / "fragile" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
        sync_config(model_dir)
        assert len((model_dir / CONFIG_FILE).read_text()) > 4096
        with (
            model_server_running(
                "faults-model-server",
                model_dir,
                logs_dir,
                {**SERVED, "fragile": 2},
                flags=["--max_num_load_retries=0"],  # a failed load ends at once
            ) as server,
            gateway_running(
                "faults-gateway",
                logs_dir,
                redis_url,
                server.port,
                model_dir,
                root / "secrets",
                FDL_PROMOTE_TIMEOUT_S="20",
            ) as gateway,
        ):
            yield Faulty(disk, model_dir, server, gateway)


def state(model_dir: Path) -> tuple[str, str, list[str]]:
    """labels.json, models.config and the names of the repository's files (no leftovers)."""
    files = sorted(p.name for p in model_dir.iterdir() if p.is_file())
    labels = model_dir / LABELS_FILE
    text = labels.read_text() if labels.exists() else ""
    return text, (model_dir / CONFIG_FILE).read_text(), files


@contextmanager
def pages_left(disk: Path, pages: int) -> Iterator[None]:
    """Fill the tmpfs until exactly ``pages`` pages are free; freed on leaving."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, (stat.f_bavail - pages) * stat.f_frsize)
    try:
        assert os.statvfs(disk).f_bavail == pages
        yield
    finally:
        filler.unlink()


@contextmanager
def read_only(disk: Path) -> Iterator[None]:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)


def label_version(gateway: Gateway, model: str, label: str) -> int:
    url = f"{gateway.url}/v1/models/{model}/labels/{label}:classify"
    response = classify(url, gateway.classifier())
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def admin(gateway: Gateway, method: str, path: str) -> httpx.Response:
    return httpx.request(method, f"{gateway.url}{path}", headers=gateway.admin(), timeout=60)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def test_a_full_disk_changes_no_label(faulty: Faulty) -> None:
    gateway, model_dir = faulty.gateway, faulty.model_dir
    assert set_label(gateway, "digits", "stable", {"version": 2}).status_code == 200
    before = state(model_dir)
    with pages_left(faulty.disk, 1):  # room for labels.json, not for models.config
        promoted = set_label(gateway, "digits", "canary", {"version": 2})
        assert_error(promoted, 507, "insufficient_storage")
        assert "No space left on device" in promoted.json()["error"]["message"]
        assert state(model_dir) == before
        removed = admin(gateway, "DELETE", "/v1/models/digits/labels/stable")
        assert_error(removed, 507, "insufficient_storage")
        assert state(model_dir) == before
        rolled = admin(gateway, "POST", "/v1/models/digits/labels/stable:rollback")
        assert_error(rolled, 507, "insufficient_storage")
        assert state(model_dir) == before
    # What the client was refused never takes effect: not now, not at the next render (the
    # config a worker's publish writes), and the model server kept the old labels.
    assert read_labels(model_dir)["digits"] == {"stable": 2}
    assert render_config(model_dir) == before[1]
    assert label_version(gateway, "digits", "stable") == 2
    canary = f"{gateway.url}/v1/models/digits/labels/canary:classify"
    assert classify(canary, gateway.classifier()).status_code == 404
    # With room again the same promotion goes through.
    assert set_label(gateway, "digits", "canary", {"version": 2}).status_code == 200
    assert read_labels(model_dir)["digits"] == {"stable": 2, "canary": 2}


def test_a_full_disk_after_the_version_loaded_undoes_both_steps(faulty: Faulty) -> None:
    """promo 1 is not loaded: the config is written twice (keep it loaded, then the label). With
    room for the first config but not for both files after it, both steps are undone and the
    model server unloads version 1 again."""
    gateway, model_dir, server = faulty.gateway, faulty.model_dir, faulty.server
    assert versions_available(server.target, "promo") == {3}
    before = state(model_dir)
    # Fixed pages: the first config (2) while the old one is kept to undo, labels.json (1), and
    # one short for the second config (2).
    with pages_left(faulty.disk, 4):
        promoted = set_label(gateway, "promo", "stable", {"version": 1})
        assert_error(promoted, 507, "insufficient_storage")
        assert state(model_dir) == before
    wait_for(
        lambda: versions_available(server.target, "promo") == {3},
        30,
        "promo version 1 to be unloaded again",
        check=server.process.ensure_alive,
    )


def test_a_version_that_fails_to_load_leaves_the_config_alone(faulty: Faulty) -> None:
    gateway, model_dir = faulty.gateway, faulty.model_dir
    before = state(model_dir)
    failed = set_label(gateway, "fragile", "stable", {"version": 1})
    assert_error(failed, 409, "version_failed")
    assert state(model_dir) == before  # version 1 is not left in the specific version policy
    assert "fragile" not in read_labels(model_dir)
    assert versions_available(faulty.server.target, "fragile") == {2}


def test_a_read_only_repository_is_a_coded_error(faulty: Faulty) -> None:
    gateway, model_dir = faulty.gateway, faulty.model_dir
    before = state(model_dir)
    with read_only(faulty.disk):
        promoted = set_label(gateway, "digits", "beta", {"version": 1})
        assert_error(promoted, 500, "repository_error")
        assert "Read-only file system" in promoted.json()["error"]["message"]
    assert state(model_dir) == before


@pytest.mark.parametrize(
    "text", ["{not json", "[1]", '{"digits": 5}', '{"digits": {"stable": "two"}}']
)
def test_a_corrupt_labels_file_is_refused_and_kept(faulty: Faulty, text: str) -> None:
    gateway, model_dir = faulty.gateway, faulty.model_dir
    labels = model_dir / LABELS_FILE
    good = labels.read_text()
    labels.write_text(text)
    try:
        for response in (
            set_label(gateway, "digits", "beta", {"version": 1}),
            admin(gateway, "POST", "/v1/models/digits/labels/stable:rollback"),
            admin(gateway, "DELETE", "/v1/models/digits/labels/stable"),
        ):
            assert_error(response, 409, "invalid_labels")
            assert labels.read_text() == text  # never written over: the labels are not lost
        listing = httpx.get(f"{gateway.url}/v1/models", headers=gateway.classifier(), timeout=30)
        assert listing.status_code == 200, listing.text
    finally:
        labels.write_text(good)
