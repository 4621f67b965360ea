"""A load that finishes while a reload's poll lists the base path unloads by the new policy.

A reload swaps a model's config under the manager's lock, and its own poll then lists the base
path outside it. A version whose load finished in between unloaded the others by the aspired
versions of the last poll applied, the old policy's: rolling ``latest`` back to
``specific { 1 }`` (with ``stable`` -> 1) while version 2 loaded closed version 1, so ``stable``
answered ``Servable not found`` until version 1 loaded again. The manager and the models are
real; the load of version 2 and the reload's listing are held on events, not on time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

import serving.lifecycle
from harness.procs import wait_for
from serving.manager import ManagerOptions, ModelManager

State = get_model_status_pb2.ModelVersionStatus.State
HELD_S = 120  # how long a held step may wait before the test gives up


@dataclass
class Held:
    """Events that hold the load of version 2 and the listing of the base path."""

    base: Path
    manager: ModelManager
    loading: threading.Event
    finish_load: threading.Event
    hold_listing: threading.Event
    listing: threading.Event
    finish_listing: threading.Event

    def states(self) -> dict[int, int]:
        return {v: s for v, s, _, _ in self.manager.status("m", None)}

    def config(self, versions: list[int], label: int | None = None) -> object:
        config = model_server_config_pb2.ModelServerConfig()
        model = config.model_config_list.config.add(
            name="m", base_path=str(self.base), model_platform="tensorflow"
        )
        if versions:
            model.model_version_policy.specific.versions.extend(versions)
        if label is not None:
            model.version_labels["stable"] = label
        return config


@pytest.fixture
def held(model_stock, tmp_path, monkeypatch) -> Iterator[Held]:
    base = tmp_path / "m"
    manager = ModelManager(ManagerOptions(enable_warmup=False, max_num_load_retries=0))
    state = Held(base, manager, *(threading.Event() for _ in range(5)))
    load_version = serving.lifecycle.load_version
    listdir = os.listdir

    def held_load(name, record, options):  # type: ignore[no-untyped-def]
        if record.version == 2:
            state.loading.set()
            assert state.finish_load.wait(HELD_S), "the load of version 2 was never let go"
        return load_version(name, record, options)

    def held_listdir(path: object = ".") -> list[str]:
        if state.hold_listing.is_set() and os.fspath(path) == str(base):  # type: ignore[arg-type]
            state.listing.set()
            assert state.finish_listing.wait(HELD_S), "the listing was never let go"
        return listdir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(serving.lifecycle, "load_version", held_load)
    monkeypatch.setattr(os, "listdir", held_listdir)
    model_stock.install("a", base, 1)
    try:
        manager.apply_config(state.config([]))  # latest { 1 }
        manager.wait_available(["m"], timeout=HELD_S)
        model_stock.install("b", base, 2)
        manager.poll()
        assert state.loading.wait(HELD_S)
        yield state
    finally:
        state.finish_load.set()
        state.finish_listing.set()
        manager.stop()


def _reload_while_version_2_finishes(held: Held, config: object) -> threading.Thread:
    """Reload with ``config``; let version 2 finish loading while the reload's poll lists the
    base path, and wait until it has."""
    held.hold_listing.set()
    reload = threading.Thread(target=held.manager.apply_config, args=(config,))
    reload.start()
    assert held.listing.wait(HELD_S), "the reload's poll did not list the base path"
    held.finish_load.set()
    wait_for(lambda: held.states()[2] != State.LOADING, HELD_S, "version 2 done loading")
    return reload


def test_a_rollback_keeps_the_pinned_version_while_its_poll_lists(held) -> None:
    reload = _reload_while_version_2_finishes(held, held.config([1], label=1))
    try:
        during = held.states()
        servable = held.manager.resolve("m", None, "stable")
        servable.release()
    finally:
        held.finish_listing.set()
        reload.join(HELD_S)
    # Before, version 1 was closed here and the label answered "Servable not found".
    assert during[1] == State.AVAILABLE and servable.version == 1
    assert during[2] in (State.UNLOADING, State.END)  # the new policy does not aspire it
    wanted = {1: State.AVAILABLE, 2: State.END}
    wait_for(lambda: held.states() == wanted, HELD_S, f"the pinned version only: {wanted}")


def test_a_policy_naming_a_version_not_yet_listed_unloads_nothing_meanwhile(
    held, model_stock
) -> None:
    """``specific { 3 }`` for a version published since the last poll: the new policy aspires
    none of the versions listed then, which would unload them all; they stay until the poll
    lists version 3, which replaces them once it is available."""
    model_stock.install("c", held.base, 3)
    reload = _reload_while_version_2_finishes(held, held.config([3]))
    try:
        during = held.states()
    finally:
        held.finish_listing.set()
        reload.join(HELD_S)
    assert during == {1: State.AVAILABLE, 2: State.AVAILABLE}
    wanted = {1: State.END, 2: State.END, 3: State.AVAILABLE}
    wait_for(lambda: held.states() == wanted, HELD_S, f"version 3 only: {wanted}")
