"""The manager's lock, which every request's lookup takes, is never held while files are read.

Once a new version loaded, the manager listed the model's base path again under its lock to
unload the versions it replaces, and each poll fingerprinted the model's failed versions under
it; on a slow or hung file system (NFS) every request waited for those reads. The replaced
versions now go by the aspired versions of the newest poll, as TF Serving's manager acts on the
last aspired list its source sent, and the fingerprints are taken before the lock. The slow file
system is ``os.listdir`` or ``os.walk`` of one folder taking 3 s; the manager and the model are
real.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from harness.procs import wait_for
from serving.manager import ManagerOptions, ModelManager

State = get_model_status_pb2.ModelVersionStatus.State
SLOW_LISTING_S = 3.0


def _one_model(
    model_stock, base: Path
) -> tuple[ModelManager, model_server_config_pb2.ModelServerConfig]:
    """A manager without retries and the config of one model ``m`` at ``base`` (version 1)."""
    model_stock.install("a", base, 1)
    manager = ModelManager(ManagerOptions(enable_warmup=False, max_num_load_retries=0))
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="m", base_path=str(base), model_platform="tensorflow")
    return manager, config


def test_lookups_do_not_wait_for_a_slow_base_path(model_stock, tmp_path, monkeypatch) -> None:
    base = tmp_path / "m"
    manager, config = _one_model(model_stock, base)
    slow = threading.Event()
    listdir = os.listdir

    def slow_listdir(path: object = ".") -> list[str]:
        if slow.is_set() and os.fspath(path) == str(base):  # type: ignore[arg-type]
            threading.Event().wait(SLOW_LISTING_S)  # the file system's delay, not a wait for us
        return listdir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "listdir", slow_listdir)
    waits: list[float] = []
    done = threading.Event()

    def probe() -> None:  # a request's lookup every 10 ms
        while not done.is_set():
            started = time.monotonic()
            manager.resolve("m", None, None).release()
            waits.append(time.monotonic() - started)
            done.wait(0.01)

    try:
        manager.apply_config(config)
        manager.wait_available(["m"], timeout=120)
        prober = threading.Thread(target=probe)
        prober.start()
        model_stock.install("a", base, 2)
        slow.set()
        manager.poll()  # lists the base path (slowly, outside the lock) and loads version 2

        def swapped() -> bool:
            states = {v: s for v, s, _, _ in manager.status("m", None)}
            return states == {2: State.AVAILABLE, 1: State.END}

        wait_for(swapped, 120, "version 2 serving and version 1 unloaded")
        done.set()
        prober.join(30)
    finally:
        done.set()
        manager.stop()
    assert waits and max(waits) < SLOW_LISTING_S / 3, max(waits)


def test_lookups_do_not_wait_for_a_failed_version_s_files(
    model_stock, tmp_path, monkeypatch
) -> None:
    """A version whose load failed is tried again only once its files change: each poll takes
    the fingerprint of its folder (every file's size and time), which it did under the lock."""
    base = tmp_path / "m"
    manager, config = _one_model(model_stock, base)
    slow = threading.Event()
    walk = os.walk

    def slow_walk(top: object, *args: object, **kwargs: object) -> object:
        if slow.is_set() and os.fspath(top) == str(base / "2"):  # type: ignore[arg-type]
            threading.Event().wait(SLOW_LISTING_S)  # the file system's delay, not a wait for us
        return walk(top, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "walk", slow_walk)
    try:
        manager.apply_config(config)
        manager.wait_available(["m"], timeout=120)
        model_stock.install("broken", base, 2)
        manager.poll()  # version 1 keeps serving while version 2 fails

        def failed() -> bool:
            states = {v: s for v, s, _, _ in manager.status("m", None)}
            return states == {2: State.END, 1: State.AVAILABLE}

        wait_for(failed, 120, "version 2 failed and version 1 serving")
        slow.set()
        poll = threading.Thread(target=manager.poll)
        poll.start()
        waits = []
        while poll.is_alive():
            started = time.monotonic()
            manager.resolve("m", None, None).release()
            waits.append(time.monotonic() - started)
            poll.join(0.01)
    finally:
        manager.stop()
    assert waits and max(waits) < SLOW_LISTING_S / 3, max(waits)
