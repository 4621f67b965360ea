"""A version's ``metadata.json`` as the gateway reads it: the profile it records, or the one its
recorded dataset implies; and a bounded read, so that no file there can block, exhaust or crash
the classify path's cache miss or the model listing (both read it with one reader).

Before, a version published before profiles were recorded got ``digit`` for 1 channel whatever it
was trained on (a grey image-folder model: 0.002 accuracy through the gateway, 0.740 in process);
a 260 MB file took 4 s and 1.1 GB per concurrent miss, a symlink to ``/dev/zero`` raised
MemoryError, and a named pipe blocked its thread forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from api.repository import (
    METADATA_MAX_BYTES,
    describe_version,
    read_version_metadata,
    recorded_profile,
)
from fdl import contract

MODEL = "m"


def _metadata_path(model_dir: Path, model: str = MODEL) -> Path:
    path = model_dir / model / "1" / contract.METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write(model_dir: Path, metadata: Any, model: str = MODEL) -> None:
    _metadata_path(model_dir, model).write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    ("metadata", "profile"),
    [
        ({contract.PROFILE_KEY: "photo", "dataset": {"name": "mnist"}}, "photo"),
        ({contract.PROFILE_KEY: "digit", "dataset": {"name": "mine"}}, "digit"),
        ({"dataset": {"name": "mnist", "source": "/srv/data/mnist"}}, "digit"),
        ({"dataset": {"name": "cifar10"}}, "photo"),
        ({"dataset": {"name": "my-grey-digits"}}, "photo"),  # an image folder, any channels
        ({contract.PROFILE_KEY: "sepia", "dataset": {"name": "cifar10"}}, "photo"),
        ({"dataset": {"name": ""}}, None),
        ({"dataset": "mnist"}, None),
        ({"dataset": {"name": 7}}, None),
        ({"model": "photos", "classes": ["0", "1"]}, None),
        (["not", "an", "object"], None),
    ],
)
def test_the_profile_recorded_else_implied_by_the_dataset(
    tmp_path: Path, metadata: Any, profile: str | None
) -> None:
    _write(tmp_path, metadata)
    assert recorded_profile(tmp_path, MODEL, 1) == profile


def test_no_metadata_records_no_profile(tmp_path: Path) -> None:
    assert recorded_profile(tmp_path, MODEL, 1) is None  # the gateway then goes by channels


def test_a_symlink_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"dataset": {"name": "mnist"}}))
    _metadata_path(tmp_path).symlink_to(elsewhere)
    assert recorded_profile(tmp_path, MODEL, 1) == "digit"


def test_a_file_over_the_cap_is_not_read(tmp_path: Path) -> None:
    padding = "x" * METADATA_MAX_BYTES
    _write(tmp_path, {contract.PROFILE_KEY: "photo", "pad": padding})
    assert recorded_profile(tmp_path, MODEL, 1) is None
    # A large sparse file costs nothing to make, and is refused by its size alone.
    with _metadata_path(tmp_path, "sparse").open("wb") as handle:
        handle.truncate(260 << 20)
    assert read_version_metadata(tmp_path, "sparse", 1) is None


def test_a_device_is_not_read(tmp_path: Path) -> None:
    _metadata_path(tmp_path).symlink_to("/dev/zero")
    assert recorded_profile(tmp_path, MODEL, 1) is None
    assert describe_version(tmp_path, MODEL, 1, None, [])["metadata"] is None


def test_a_named_pipe_is_never_waited_on(tmp_path: Path) -> None:
    fifo = _metadata_path(tmp_path)
    os.mkfifo(fifo)
    results: list[Any] = []

    def read_both() -> None:
        results.append(recorded_profile(tmp_path, MODEL, 1))
        results.append(describe_version(tmp_path, MODEL, 1, None, [])["metadata"])

    reader = threading.Thread(target=read_both, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():
        deadline = time.monotonic() + 10
        while reader.is_alive() and time.monotonic() < deadline:
            # Let a reader blocked in open() go (a writer that closes at once: end of file).
            with contextlib.suppress(OSError):  # ENXIO: no reader has the pipe open now
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(timeout=0.05)
        pytest.fail("reading metadata.json waited on a named pipe")
    assert results == [None, None]


def test_the_listing_reads_the_same_bounded_metadata(tmp_path: Path) -> None:
    _write(tmp_path, {"class_names": ["a", "b"], "dataset": {"name": "x"}})
    assert describe_version(tmp_path, MODEL, 1, None, [])["class_names"] == ["a", "b"]
    _write(tmp_path, {"class_names": ["a", "b"], "pad": "x" * METADATA_MAX_BYTES})
    assert describe_version(tmp_path, MODEL, 1, None, [])["class_names"] is None
