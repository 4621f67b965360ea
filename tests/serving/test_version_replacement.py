"""Under ``latest { 1 }``, one replaced version at most keeps serving while a new one fails.

Version 2 finished loading after version 3 had been published, so 1 and 2 both served, neither
aspired, while 3 failed. Both stayed loaded for good (twice the memory); TF Serving's
AvailabilityPreservingPolicy unloads the lowest of two or more unaspired versions that serve, so
only 2 stays. Version 2's load is held back by the manager's own load hook; the manager, the
models and TensorFlow are real.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from harness.procs import wait_for
from serving.manager import ManagerOptions, ModelManager

State = get_model_status_pb2.ModelVersionStatus.State


def test_only_the_newest_replaced_version_stays_while_the_aspired_one_fails(
    model_stock, tmp_path
) -> None:
    base = tmp_path / "m"
    model_stock.install("a", base, 1)
    release = threading.Event()

    def hold_version_2(path: str, loaded: bool, seconds: float) -> None:
        if Path(path).name == "2":
            release.wait(120)

    options = ManagerOptions(enable_warmup=False, max_num_load_retries=0, on_load=hold_version_2)
    manager = ModelManager(options)
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="m", base_path=str(base), model_platform="tensorflow")

    def states() -> dict[int, int]:
        return {v: s for v, s, _, _ in manager.status("m", None)}

    try:
        manager.apply_config(config)
        manager.wait_available(["m"], timeout=120)
        model_stock.install("b", base, 2)
        manager.poll()  # version 2 loads, held back
        wait_for(lambda: states().get(2) == State.LOADING, 60, "version 2 loading")
        model_stock.install("broken", base, 3)
        manager.poll()  # version 3 is the aspired one now, and fails
        wait_for(lambda: states().get(3) == State.END, 120, "version 3 failed")
        assert states()[1] == State.AVAILABLE
        release.set()  # version 2 becomes available, not aspired
        wait_for(
            lambda: states() == {1: State.END, 2: State.AVAILABLE, 3: State.END},
            60,
            "version 1 unloaded and version 2 serving",
        )
        servable = manager.resolve("m", None, None)
        try:
            assert servable.version == 2
        finally:
            servable.release()
    finally:
        release.set()
        manager.stop()
