"""Model lifecycle: config polling, version swaps under traffic, failed and incomplete versions."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2

from harness.models import write_warmup_file
from harness.procs import wait_for
from harness.tfs import (
    SHAPE,
    images,
    model_config,
    predict_request,
    served_version,
    statuses,
    wait_served,
)

State = get_model_status_pb2.ModelVersionStatus.State


class Repo:
    """A model repository plus the config file that the server polls."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "models.config"
        self.models: dict[str, Path] = {}
        self.config.write_text("model_config_list {}\n")  # the stack starts with no models

    def add(self, name: str) -> Path:
        self.models[name] = self.root / name
        self.models[name].mkdir(exist_ok=True)
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(model_config(self.models))
        tmp.replace(self.config)
        return self.models[name]


POLLING = [
    "--model_config_file_poll_wait_seconds=1",
    "--file_system_poll_wait_seconds=1",
    "--max_num_load_retries=1",
    "--load_retry_interval_micros=200000",
]


@pytest.fixture(scope="module")
def polled(impl, server_factory, tmp_path_factory):
    repo = Repo(tmp_path_factory.mktemp("polled"))
    server = server_factory(impl, "lifecycle", [f"--model_config_file={repo.config}", *POLLING])
    return server, repo


@pytest.fixture(scope="module")
def polled_batching(impl, server_factory, tmp_path_factory):
    """The same, with server-side batching: swaps must also drain the batch queues."""
    repo = Repo(tmp_path_factory.mktemp("polled-batching"))
    params = repo.root / "batching.config"
    params.write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000 }\n"
        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n"
    )
    flags = [
        f"--model_config_file={repo.config}",
        *POLLING,
        "--enable_batching=true",
        f"--batching_parameters_file={params}",
    ]
    return server_factory(impl, "lifecycle-batching", flags), repo


def test_model_added_to_polled_config(polled, model_stock) -> None:
    server, repo = polled
    assert statuses(server, "fresh") == {}
    base = repo.add("fresh")
    model_stock.install("a", base, 1)
    wait_served(server, "fresh", 1)
    assert statuses(server, "fresh")[1][0] == State.AVAILABLE


class Traffic:
    """Predict calls in a loop on two threads, recording versions and failures."""

    def __init__(self, server, name: str) -> None:
        self.server, self.name = server, name
        self.versions: list[int] = []
        # Each thread's own, in the order it sent them: the shared list is in the order the
        # answers came, so a call sent before a swap can finish after another thread's call
        # sent after it.
        self.sent_by_thread: list[list[int]] = [[], []]
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(sent,), daemon=True)
            for sent in self.sent_by_thread
        ]

    def _run(self, sent: list[int]) -> None:
        stub = self.server.prediction()
        while not self.stop.is_set():
            try:
                response = stub.Predict(predict_request(self.name, images(2)), timeout=30)
                sent.append(response.model_spec.version.value)
                self.versions.append(response.model_spec.version.value)
            except grpc.RpcError as error:
                self.errors.append(f"{error.code()}: {error.details()}")

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def seen(self, version: int, count: int = 20) -> bool:
        return self.versions[-count:].count(version) == count


@pytest.mark.parametrize("setup", ["polled", "polled_batching"])
def test_version_swap_under_traffic(setup, impl, request, model_stock) -> None:
    server, repo = request.getfixturevalue(setup)
    base = repo.add("swap")
    model_stock.install("a", base, 1)
    wait_served(server, "swap", 1)
    with Traffic(server, "swap") as traffic:
        wait_for(lambda: traffic.seen(1), 30, "traffic on version 1")
        model_stock.install("b", base, 2)
        wait_for(lambda: traffic.seen(2), 60, "traffic moved to version 2")
    assert traffic.errors == []
    for sent in traffic.sent_by_thread:  # once a client was served version 2, always 2
        assert 2 in sent and set(sent[sent.index(2) :]) == {2}, "served version went back"
    wait_for(lambda: statuses(server, "swap").get(1, (None,))[0] == State.END, 30, "v1 unloaded")


def test_incomplete_version_never_wedges(polled, model_stock, impl) -> None:
    server, repo = polled
    base = repo.add("partial")
    model_stock.install("a", base, 1)
    wait_served(server, "partial", 1)
    partial = base / "2"
    with Traffic(server, "partial") as traffic:
        shutil.copytree(model_stock.versions["b"] / "variables", partial / "variables")
        wait_for(lambda: len(traffic.versions) >= 40, 30, "traffic beside an incomplete version")
        if impl == "fdl":  # the export completes: our server loads it (TF Serving may not retry)
            shutil.copy(model_stock.versions["b"] / "saved_model.pb", partial / "saved_model.pb")
            wait_for(lambda: traffic.seen(2), 60, "completed version 2 served")
    assert traffic.errors == []
    assert traffic.versions[0] == 1


def test_failed_load_keeps_old_version(polled, model_stock, impl) -> None:
    server, repo = polled
    base = repo.add("flaky")
    model_stock.install("a", base, 1)
    wait_served(server, "flaky", 1)
    model_stock.install("broken", base, 2)

    def failed() -> bool:
        state, message = statuses(server, "flaky").get(2, (None, ""))
        return state == State.END and bool(message)

    wait_for(failed, 60, "version 2 reported as failed", check=server.process.ensure_alive)
    assert served_version(server, "flaky") == 1
    assert statuses(server, "flaky")[1][0] == State.AVAILABLE
    if impl == "fdl":
        log = server.process.log_tail(200_000)
        assert "Loading servable flaky version 2 failed (attempt 2 of 2)" in log
        # Fixing the files of the failed version makes it load.
        shutil.rmtree(base / "2")
        model_stock.install("b", base, 2)
        wait_served(server, "flaky", 2)


def test_warmup_replayed_and_failed_warmup_rejected(polled, model_stock, impl, tmp_path) -> None:
    server, repo = polled
    base = repo.add("warm")
    model_stock.install("a", base, 1)  # "a" carries two warmup requests
    wait_served(server, "warm", 1)
    if impl == "fdl":
        assert "warm version 1: 2 warmup requests" in server.process.log_tail(200_000)
    bad = tmp_path / "bad"
    shutil.copytree(model_stock.versions["b"], bad)
    write_warmup_file(bad / "assets.extra" / "tf_serving_warmup_requests", "warm", SHAPE, 1,
                      input_key="pixels")  # fmt: skip
    shutil.copytree(bad, base / ".tmp")
    (base / ".tmp").rename(base / "2")

    def failed() -> bool:
        state, message = statuses(server, "warm").get(2, (None, ""))
        return state == State.END and bool(message)

    wait_for(failed, 60, "version 2 failing its warmup", check=server.process.ensure_alive)
    assert served_version(server, "warm") == 1


def test_base_path_briefly_missing_keeps_versions(polled, model_stock, impl) -> None:
    """A base path moved away for a few polls (a deploy swapping directories) changes nothing.

    TF Serving checks that the base path exists before listing it, so that it never emits an
    empty version list for a missing or transiently unavailable one, and aborts that poll
    (file_system_storage_path_source.cc:251-262 and :333, tensorflow/serving @ 9d981c5c); the
    error is logged on every poll (:416, "Could not find base path … for servable …").
    """
    server, repo = polled
    base = repo.add("moving")
    model_stock.install("a", base, 1)
    wait_served(server, "moving", 1)
    marker = f"Could not find base path {base} for servable moving"

    def failed_polls() -> int:
        return server.process.log_tail(50_000_000).count(marker)

    moved = base.with_name("moving.away")
    base.rename(moved)
    try:
        # Two polls have found the base path missing: the version is still served.
        wait_for(lambda: failed_polls() >= 2, 30, "two polls without the base path",
                 check=server.process.ensure_alive)  # fmt: skip
        assert served_version(server, "moving") == 1
        assert statuses(server, "moving")[1][0] == State.AVAILABLE
    finally:
        moved.rename(base)
    assert served_version(server, "moving") == 1
    assert statuses(server, "moving")[1][0] == State.AVAILABLE
    if impl == "fdl":
        assert "unloading moving version 1" not in server.process.log_tail(50_000_000)


def test_polled_file_undoes_a_reload_config(polled, model_stock) -> None:
    """The polled file is compared with the config served now, as TF Serving's poll does: a
    ReloadConfig that dropped a model (say from a gateway that then died, whose change was rolled
    back in the file) is undone at the next poll even though the file's text did not change."""
    server, repo = polled
    base = repo.add("kept")
    model_stock.install("a", base, 1)
    wait_served(server, "kept", 1)
    file_text = repo.config.read_text()
    others = {name: path for name, path in repo.models.items() if name != "kept"}
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(model_config(others), request.config)
    server.models().HandleReloadConfigRequest(request, timeout=120)
    assert repo.config.read_text() == file_text  # the file is as it was
    wait_served(server, "kept", 1)
