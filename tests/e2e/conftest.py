"""The whole stack as `make run` starts it: `fdl up` with its own Redis, on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.stack import RunningStack, fdl_up, stack_env


@pytest.fixture(scope="package")
def stack(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, logs_dir: Path
) -> Iterator[RunningStack]:
    tmp = tmp_path_factory.mktemp("stack")
    with fdl_up("fdl-up", stack_env(tmp, data_dir), logs_dir, tmp / "models", tmp / "var") as up:
        yield up
