"""Version folders as TF Serving reads them: odd names, duplicates, unreadable folders.

TF Serving reads a child of the base path as a version with ``absl::SimpleAtoi``
(``file_system_storage_path_source.cc``, ``ParseVersionNumber``): ASCII digits with an optional
sign, within int64; two names of one version (``5`` and ``05``) are indexed in byte order, the
last one wins (``IndexChildrenByVersion``); it aspires a version-named folder without looking
inside it, so a folder it cannot read fails its own load and nothing else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2

from harness.procs import Process, free_port, grpc_ready, wait_for
from harness.tfs import (
    expected_scores,
    images,
    model_config,
    predict_request,
    scores_of,
    server_argv,
    statuses,
    wait_served,
)

State = get_model_status_pb2.ModelVersionStatus.State
POLLING = [
    "--file_system_poll_wait_seconds=1",
    "--model_config_file_poll_wait_seconds=1",
    "--max_num_load_retries=0",
]


def _publish(source: Path, base: Path, name: str) -> Path:
    """Copy a version folder in under ``name``, appearing at once (as training publishes)."""
    staging = base.parent / f".staging-{base.name}"
    shutil.copytree(source, staging)
    target = base / name
    staging.rename(target)
    return target


@pytest.fixture(scope="module")
def polled(impl, server_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("version-folders")
    config = root / "models.config"
    config.write_text("model_config_list {}\n")
    server = server_factory(impl, "version-folders", [f"--model_config_file={config}", *POLLING])
    return server, root, config


def _add_model(root: Path, config: Path, name: str) -> Path:
    """A model in the polled config; the config lists every folder under ``root/models``."""
    base = root / "models" / name
    base.mkdir(parents=True, exist_ok=True)
    models = {path.name: path for path in sorted((root / "models").iterdir())}
    tmp = config.with_suffix(".tmp")
    tmp.write_text(model_config(models))
    tmp.replace(config)
    return base


def test_version_names_are_read_as_tf_serving_reads_them(polled, model_stock) -> None:
    """``0003`` is version 3; ``١٢`` (Arabic-Indic digits, ``str.isdigit`` to Python), ``²``
    (which ``int()`` refuses) and a number beyond int64 are not versions. Before, ``١٢`` was
    served as version 12 and ``²`` failed every poll of every model (a ValueError) from then on."""
    server, root, config = polled
    base = _add_model(root, config, "names")
    _publish(model_stock.versions["a"], base, "1")
    wait_served(server, "names", 1)
    _publish(model_stock.versions["b"], base, "\u0661\u0662")
    _publish(model_stock.versions["b"], base, "0003")
    wait_served(server, "names", 3)
    _publish(model_stock.versions["c"], base, "99999999999999999999")
    _publish(model_stock.versions["c"], base, "\u00b2")
    _publish(model_stock.versions["a"], base, "4")
    wait_served(server, "names", 4)
    assert set(statuses(server, "names")) == {1, 3, 4}


def test_two_names_of_one_version_load_the_last_in_byte_order(polled, model_stock) -> None:
    server, root, config = polled
    base = root / "models" / "twins"
    base.mkdir(parents=True)
    _publish(model_stock.versions["b"], base, "05")
    _publish(model_stock.versions["c"], base, "5")
    _add_model(root, config, "twins")  # both folders are there at the first poll
    wait_served(server, "twins", 5)
    batch = images(3)
    response = server.prediction().Predict(predict_request("twins", batch), timeout=30)
    want = expected_scores(model_stock.versions["c"], batch)
    np.testing.assert_allclose(scores_of(response), want, rtol=1e-5)


def _run_as() -> list[str]:
    """A prefix that runs the server as a user a folder's permissions apply to: nothing when
    the tests are not root, ``setpriv`` to nobody when they are (root reads any folder)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("platform: running as root without setpriv: permissions cannot deny the server")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def _readable(path: Path) -> Path:
    for folder, _, files in os.walk(path):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    return path


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder any user may read (pytest's tmp_path is private to the tests' user)."""
    path = Path(tempfile.mkdtemp(prefix="fdl-unreadable-"))
    path.chmod(0o755)
    yield path
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o755)  # so that it can be removed
    shutil.rmtree(path)


def test_unreadable_version_folder_fails_alone(impl, model_stock, open_dir, logs_dir) -> None:
    """A version folder the server may not look into (an export written with a private umask by
    another user) is a version whose load fails; the model keeps serving and later versions
    load. Before, listing its contents raised PermissionError, which the poll took for a missing
    base path: the model's versions were frozen (``Could not find base path``) until the folder
    became readable."""
    base = open_dir / "locked"
    base.mkdir()
    _readable(_publish(model_stock.versions["a"], base, "1"))
    config = open_dir / "models.config"
    config.write_text(model_config({"locked": base}))
    config.chmod(0o644)
    port = free_port()
    argv = [*_run_as(), *server_argv(impl), f"--port={port}", f"--model_config_file={config}"]
    process = Process(f"unreadable-{impl}", [*argv, *POLLING], logs_dir)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        wait_for(lambda: grpc_ready(channel), 90, "model server", check=process.ensure_alive)
        server = _Served(process, channel)
        wait_served(server, "locked", 1)  # type: ignore[arg-type]
        locked = _publish(model_stock.versions["b"], base, "2")
        locked.chmod(0)

        def failed() -> bool:
            state, message = statuses(server, "locked").get(2, (None, ""))  # type: ignore[arg-type]
            return state == State.END and bool(message)

        wait_for(failed, 60, "version 2 reported as failed", check=process.ensure_alive)
        assert statuses(server, "locked")[1][0] == State.AVAILABLE  # type: ignore[arg-type]
        _readable(_publish(model_stock.versions["c"], base, "3"))
        wait_served(server, "locked", 3)  # type: ignore[arg-type]
    finally:
        channel.close()
        process.stop()


class _Served:
    """What ``harness.tfs``'s helpers use of a server: its process and its stubs."""

    def __init__(self, process: Process, channel: grpc.Channel) -> None:
        self.process = process
        self.channel = channel

    def prediction(self):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def models(self):
        from tensorflow_serving.apis import model_service_pb2_grpc

        return model_service_pb2_grpc.ModelServiceStub(self.channel)
