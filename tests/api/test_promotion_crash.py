"""A gateway killed with SIGKILL in the middle of a change of labels: the change was never
acknowledged, so the next process that takes the repository lock (another gateway's change, a
worker's publish, a restarted gateway) rolls it back, and ``labels.json`` and ``models.config``
agree again.

The kill lands at a known point: the change's config adds a model folder whose version cannot
finish loading (its warmup file is a FIFO nobody writes), so the model server's reload, and with
it the gateway, waits after both files were written and before any answer.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fdl import contract
from fdl.repository import CONFIG_FILE, Repository, render_config
from fdl.repository_reads import LABELS_FILE, read_labels
from harness.gateway import Gateway, classify, set_label, start_gateway
from harness.model_server import ModelServer, model_server_running
from harness.procs import wait_for
from harness.repository import SERVED, copy_repository
from training.publish import publish, staging_dir


@dataclass
class Stack:
    model_dir: Path
    server: ModelServer
    start: Callable[[str], Gateway]


@pytest.fixture(scope="module")
def stack(
    pristine_repository: Path,
    redis_url: str,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("crash")
    model_dir = copy_repository(pristine_repository, root / "models")

    def start(name: str) -> Gateway:
        # A long promotion timeout: the killed change must still be waiting when it is killed.
        return start_gateway(
            name,
            logs_dir,
            redis_url,
            server.port,
            model_dir,
            root / f"secrets-{name}",
            FDL_PROMOTE_TIMEOUT_S="300",
        )

    with model_server_running(
        "crash-model-server",
        model_dir,
        logs_dir,
        SERVED,
        flags=["--max_num_load_retries=0"],  # the released load fails at once, never retried
    ) as server:
        yield Stack(model_dir, server, start)


def leftovers(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if ".undo" in p.name)


def assert_consistent(model_dir: Path) -> None:
    """The config is what labels.json and the version folders render to, no undo record left."""
    assert (model_dir / CONFIG_FILE).read_text() == render_config(model_dir)
    assert leftovers(model_dir) == []


def label_served(gateway: Gateway, model: str, label: str) -> int:
    url = f"{gateway.url}/v1/models/{model}/labels/{label}:classify"
    return classify(url, gateway.classifier()).status_code


def hanging_model(model_dir: Path, pristine: Path, name: str) -> Path:
    """A model folder whose version 1 starts loading and then waits: its warmup file is a FIFO
    (opening it for reading blocks until a writer comes). Returns the FIFO."""
    version = model_dir / name / "1"
    shutil.copytree(pristine / "promo" / "1", version)
    fifo = version / contract.WARMUP_FILE
    fifo.parent.mkdir(exist_ok=True)
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    return fifo


def release(fifo: Path, server: ModelServer) -> None:
    """Let the waiting load go on: once the model server has the FIFO open, a writer opens and
    closes it (end of file), after an empty regular file took its name for any later open."""

    def writer() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno == errno.ENXIO:  # no reader yet
                return None
            raise

    fd = wait_for(
        writer, 60, "the model server to open the warmup FIFO", check=server.process.ensure_alive
    )
    try:
        plain = fifo.with_name("warmup.plain")
        plain.write_bytes(b"")
        os.replace(plain, fifo)
    finally:
        os.close(fd)


def kill_mid_change(
    stack: Stack, pristine: Path, name: str, model: str, label: str, version: int
) -> None:
    """Start a gateway, have it change ``label`` of ``model`` until it waits on the model server
    with both files written, SIGKILL it, and check that its client got no answer."""
    fifo = hanging_model(stack.model_dir, pristine, f"slow-{name}")
    answers: list[object] = []

    def change(gateway: Gateway) -> None:
        try:
            answers.append(set_label(gateway, model, label, {"version": version}))
        except httpx.HTTPError as error:
            answers.append(error)

    with closing(stack.start(name)) as victim:
        caller = threading.Thread(target=change, args=(victim,), daemon=True)
        caller.start()
        wait_for(
            lambda: (
                read_labels(stack.model_dir).get(model, {}).get(label) == version
                and f'"{label}"' in (stack.model_dir / CONFIG_FILE).read_text()
            ),
            60,
            f"{name} to write {model} {label} -> {version} into both files",
            check=victim.process.ensure_alive,
        )
        victim.process.signal(signal.SIGKILL)
        victim.process.popen.wait(30)
        caller.join(30)
    assert len(answers) == 1 and isinstance(answers[0], httpx.HTTPError), answers
    release(fifo, stack.server)
    shutil.rmtree(fifo.parents[2])  # the slow model, so that no later render lists it


def test_the_next_change_rolls_back_a_killed_one(stack: Stack, pristine_repository: Path) -> None:
    """labels.json did not exist before the killed change: the rollback removes it again."""
    model_dir = stack.model_dir
    repository = Repository(model_dir)
    with repository.locked():  # no labels at all, whatever ran before
        (model_dir / LABELS_FILE).unlink(missing_ok=True)
        repository.write_config(repository.render())
    kill_mid_change(stack, pristine_repository, "victim-1", "digits", "canary", 2)
    with closing(stack.start("survivor-1")) as survivor:
        response = set_label(survivor, "photos", "stable", {"version": 1})
        assert response.status_code == 200, response.text
        # The killed change is gone from both files and from the model server.
        assert read_labels(model_dir) == {"photos": {"stable": 1}}
        assert_consistent(model_dir)
        assert label_served(survivor, "digits", "canary") == 404
        assert label_served(survivor, "photos", "stable") == 200


def test_a_publish_rolls_back_a_killed_change(stack: Stack, pristine_repository: Path) -> None:
    model_dir = stack.model_dir
    with closing(stack.start("baseline-2")) as gateway:
        response = set_label(gateway, "digits", "stable", {"version": 2})
        assert response.status_code == 200, response.text
    labels_before = read_labels(model_dir)
    kill_mid_change(stack, pristine_repository, "victim-2", "digits", "beta", 2)
    # A worker publishes the next version of promo (the same call its job makes).
    staged = staging_dir(model_dir / "promo", "job-crash")
    shutil.copytree(pristine_repository / "promo" / "1", staged)
    assert publish(staged, model_dir, "promo", "job-crash") == (4, True)
    assert read_labels(model_dir) == labels_before
    assert "beta" not in (model_dir / CONFIG_FILE).read_text()
    assert_consistent(model_dir)


def test_a_restarted_gateway_rolls_back_a_killed_change(
    stack: Stack, pristine_repository: Path
) -> None:
    model_dir = stack.model_dir
    labels_before = read_labels(model_dir)
    kill_mid_change(stack, pristine_repository, "victim-3", "photos", "canary", 1)
    with closing(stack.start("restarted-3")) as restarted:
        # No change needed: the gateway rolled it back while starting.
        assert read_labels(model_dir) == labels_before
        assert_consistent(model_dir)
        # The model server reads the rolled-back config at its next poll of the file.
        wait_for(
            lambda: label_served(restarted, "photos", "canary") == 404,
            30,
            "the killed change's label to leave the model server",
            check=stack.server.process.ensure_alive,
        )
