"""What dataset caches and downloads leave when a write fails or its process dies: a failed write
removes its temporary (a full disk), and what a crashed process left (~180 MB for CIFAR-10) is
removed by a later load that finds nobody else filling the cache. Real files, a real tmpfs for a
full disk, real processes killed mid-write. That the sweep never removes a live worker's file in
progress (the fill lock) is test_data_fill_lock.py's."""

from __future__ import annotations

import errno
import functools
import http.server
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.disks import small_tmpfs
from tests.training.cache_files import ROOT, hidden
from training.data import mnist
from training.data.cifar import load_cifar10, unpack_cached

# --- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs."""
    with small_tmpfs(tmp_path / "small-disk", "8m") as mount:
        yield mount


def fill_up(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until ``leave`` bytes are free; returns the filler."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as out:
        out.truncate(0)
        out.write(b"\0" * max(stats.f_bavail * stats.f_frsize - leave, 0))
    return filler


def test_arrays_that_do_not_fit_leave_nothing_and_the_job_goes_on(
    tarball: Path, small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_root = small_disk / "cache" / "datasets"
    tree = unpack_cached(tarball, cache_root)
    filler = fill_up(small_disk, leave=256 * 1024)  # the arrays take 1.2 MB
    with caplog.at_level(logging.WARNING, logger="training.data.cifar"):
        data = load_cifar10(tarball.parents[1], small_disk, allow_download=False)
    assert data.x_train.shape == (300, 32, 32, 3) and data.x_test.shape == (100, 32, 32, 3)
    assert hidden(cache_root) == [] and not (tree / "arrays.npz").exists()
    assert "No space left on device" in caplog.text
    filler.unlink()  # space again: the next load caches them
    again = load_cifar10(tarball.parents[1], small_disk, allow_download=False)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    assert (tree / "arrays.npz").is_file() and hidden(cache_root) == []


def test_a_tarball_that_does_not_fit_leaves_no_half_tree(tarball: Path, small_disk: Path) -> None:
    fill_up(small_disk, leave=256 * 1024)
    with pytest.raises(OSError) as raised:
        load_cifar10(tarball.parents[1], small_disk, allow_download=False)
    assert raised.value.errno == errno.ENOSPC
    cache_root = small_disk / "cache" / "datasets"
    assert hidden(cache_root) == [] and not (cache_root / "cifar10-png").exists()


# --- a process that dies mid-write -----------------------------------------------------------

LIMIT = 400_000  # bytes per file: every image fits, the arrays (1.2 MB) and notes.bin do not


def die_past(limit: int) -> None:
    """In the child: a file written past ``limit`` bytes kills it (SIGXFSZ, which Python
    ignores by default, back to its default action: a crash mid-write)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def run_child(code: str, limit: int = LIMIT) -> subprocess.CompletedProcess[str]:
    prelude = "import signal; signal.signal(signal.SIGXFSZ, signal.SIG_DFL)\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=ROOT,
        preexec_fn=functools.partial(die_past, limit),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("stage", ["unpacking", "saving the arrays"])
def test_what_a_load_that_crashed_left_is_removed_by_the_next(
    tarball: Path, tmp_path: Path, stage: str
) -> None:
    cache_root = tmp_path / "var" / "cache" / "datasets"
    if stage == "saving the arrays":  # notes.bin is unpacked: only the arrays are too big
        unpack_cached(tarball, cache_root)
    child = run_child(
        "from pathlib import Path; from training.data.cifar import load_cifar10; "
        f"load_cifar10(Path({str(tarball.parents[1])!r}), Path({str(tmp_path / 'var')!r}), "
        "allow_download=False)"
    )
    assert child.returncode == -signal.SIGXFSZ, child.stderr
    left = hidden(cache_root)
    assert len(left) == 1, left
    assert left[0].startswith(".cifar10-png." if stage == "unpacking" else "cifar10-png/.arrays.")
    data = load_cifar10(tarball.parents[1], tmp_path / "var", allow_download=False)
    assert data.x_train.shape == (300, 32, 32, 3)
    assert hidden(cache_root) == []
    assert (cache_root / "cifar10-png" / "arrays.npz").is_file()


# --- MNIST downloads --------------------------------------------------------------------------


@pytest.fixture
def mirror(data_dir: Path) -> Iterator[str]:
    """The MNIST files over HTTP on a free port, as the CVDF mirror serves them."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(data_dir / "mnist")
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_what_a_crashed_mnist_download_left_is_removed_by_the_next(
    mirror: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    child = run_child(  # dies a megabyte into the 9.7 MB of training images
        "from pathlib import Path; from training.data import mnist; "
        f"mnist.MIRROR = {mirror!r}; mnist.load_mnist(Path({str(data)!r}), timeout_s=30)",
        limit=1_000_000,
    )
    assert child.returncode == -signal.SIGXFSZ, child.stderr
    parts = list((data / "mnist").glob(".*.part"))
    assert [p.name.split(".part")[0].rsplit(".", 1)[0] for p in parts] == [
        ".train-images-idx3-ubyte.gz"
    ]
    monkeypatch.setattr(mnist, "MIRROR", mirror)
    loaded = mnist.load_mnist(data, timeout_s=30)
    assert loaded.x_train.shape == (60000, 28, 28, 1)
    assert list((data / "mnist").glob(".*.part")) == []
