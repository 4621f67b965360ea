"""What dataset caches and downloads leave when a write fails or its process dies: a failed write
removes its temporary (a full disk), and what a crashed process left (~180 MB for CIFAR-10) is
removed by a later load that finds nobody else filling the cache, never a live worker's file in
progress. Real files, a real tmpfs for a full disk, real processes killed mid-write."""

from __future__ import annotations

import errno
import functools
import http.server
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from harness.disks import small_tmpfs
from harness.worker import write_image_folder
from training.data import mnist
from training.data.cifar import CLASS_NAMES, load_cifar10, unpack_cached
from training.data.leftovers import LOCK_NAME, filling

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tarball(tmp_path: Path, data_dir: Path) -> Path:
    """A CIFAR-10 image-folder export of 400 exact images (300 train, 100 test), as a tarball in
    a data folder, and a file larger than the children's size limit beside them."""
    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        x, y = exact["x_test"][:400], exact["y_test"][:400]
    export = tmp_path / "export"
    write_image_folder(export / "train", x[:300], y[:300], CLASS_NAMES)
    write_image_folder(export / "test", x[300:], y[300:], CLASS_NAMES)
    (export / "notes.bin").write_bytes(os.urandom(600_000))
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    path = folder / "cifar10-png.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name in ("train", "test", "notes.bin"):
            archive.add(export / name, name)
    return path


def hidden(folder: Path) -> list[str]:
    """The temporaries in a cache folder and the trees below it (the fill lock aside)."""
    found = [*folder.glob(".*"), *folder.glob("*/.*")]
    return sorted(str(p.relative_to(folder)) for p in found if p.name != ".fill.lock")


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


# A worker in the middle of filling the cache: it holds the fill lock and writes its temporary,
# until the test kills it or closes its stdin.
FILLER = """
import sys, tempfile
from pathlib import Path
from training.data.cifar import CACHE_LEFTOVERS
from training.data.leftovers import filling
root = Path(sys.argv[1])
with filling(root, CACHE_LEFTOVERS):
    _, tmp = tempfile.mkstemp(dir=root / "cifar10-png", prefix=".arrays.", suffix=".npz")
    print(tmp, flush=True)
    sys.stdin.readline()
"""


def start_filler(cache_root: Path) -> tuple[subprocess.Popen[str], Path]:
    child = subprocess.Popen(
        [sys.executable, "-c", FILLER, str(cache_root)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())  # printed once it holds the lock


def test_a_live_workers_file_in_progress_is_never_removed(tarball: Path, tmp_path: Path) -> None:
    data_folder, var = tarball.parents[1], tmp_path / "var"
    cache_root = var / "cache" / "datasets"
    load_cifar10(data_folder, var, allow_download=False)  # the cache, complete
    crashed, dead_file = start_filler(cache_root)
    crashed.kill()  # dies mid-write
    crashed.wait(30)
    live, live_file = start_filler(cache_root)  # nobody filled: it removed the dead one's
    assert not dead_file.exists()
    try:
        for _ in range(2):  # someone fills: its file stays, however long it takes
            load_cifar10(data_folder, var, allow_download=False)
            assert live_file.exists()
    finally:
        live.kill()  # it dies mid-write too
        live.wait(30)
    load_cifar10(data_folder, var, allow_download=False)
    assert not live_file.exists() and hidden(cache_root) == []


# A worker of another user filling a shared cache: Python starts as root (it lives under /root),
# imports, then drops to nobody; it holds the fill lock and writes a temporary until stdin closes.
OTHER_USER_FILLER = """
import os, sys, tempfile
from pathlib import Path
from training.data.leftovers import filling
os.setgroups([]); os.setgid(65534); os.setuid(65534)
with filling(Path(sys.argv[1]), [".arrays.*"]):
    print(tempfile.mkstemp(dir=sys.argv[1], prefix=".arrays.")[1], flush=True)
    sys.stdin.readline()
"""


def test_a_fill_lock_that_another_user_created_is_still_taken() -> None:
    """A shared cache folder that every user may write, whose fill lock another user's worker
    created (0644): a worker that may not open it for writing opens it read-only and holds it
    all the same. Before, it filled without the lock, and a load that found nobody filling
    removed its file in progress."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to own the lock file and run a filler as another user")
    # Not under tmp_path: pytest's folders there are private to root.
    with tempfile.TemporaryDirectory(prefix="fdl-shared-cache-") as name:
        shared = Path(name)
        shared.chmod(0o777)
        (shared / LOCK_NAME).touch()
        (shared / LOCK_NAME).chmod(0o644)  # another user's: others may only read it
        child = subprocess.Popen(
            [sys.executable, "-c", OTHER_USER_FILLER, name],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            in_progress = Path(child.stdout.readline().strip())  # printed once it holds the lock
            assert in_progress.stat().st_uid == 65534
            with filling(shared, [".arrays.*"]):  # someone fills: nothing is swept
                pass
            assert in_progress.exists()
        finally:
            child.stdin.close()
            assert child.wait(30) == 0


# --- a read-only cache ------------------------------------------------------------------------


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for this process: as root (which ignores permissions) a read-only
    bind mount of it on itself, else its folders' permissions; skipped where root may not
    mount."""
    if os.geteuid() != 0:
        folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for path in folders:
            path.chmod(0o555)
        try:
            yield
        finally:
            for path in folders:
                path.chmod(0o755)
        return
    for argv in (["mount", "--bind"], ["mount", "-o", "remount,bind,ro"]):
        done = subprocess.run(
            [*argv, str(folder), str(folder)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            subprocess.run(["umount", str(folder)], capture_output=True, check=False)
            pytest.skip(f"cannot mount {folder} read-only: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_complete_cache_in_a_read_only_folder_is_read_without_its_lock(
    tarball: Path, tmp_path: Path
) -> None:
    """A cache filled elsewhere (an image, another user's worker) and mounted read-only: the
    fill lock cannot be created there, and a load that needs to write nothing reads it anyway
    (before, every load failed: "Read-only file system: '.fill.lock'")."""
    data_folder, var = tarball.parents[1], tmp_path / "var"
    cache_root = var / "cache" / "datasets"
    filled = load_cifar10(data_folder, var, allow_download=False)
    (cache_root / LOCK_NAME).unlink()
    with read_only(cache_root):
        with pytest.raises(OSError):  # it is read-only indeed
            (cache_root / "probe").touch()
        again = load_cifar10(data_folder, var, allow_download=False)
    np.testing.assert_array_equal(again.x_train, filled.x_train)
    np.testing.assert_array_equal(again.y_test, filled.y_test)
    # Unpacked but without its arrays: decoded from the tree (they cannot be cached there).
    (cache_root / "cifar10-png" / "arrays.npz").unlink()
    with read_only(cache_root):
        decoded = load_cifar10(data_folder, var, allow_download=False)
    np.testing.assert_array_equal(decoded.x_train, filled.x_train)
    assert not (cache_root / LOCK_NAME).exists() and hidden(cache_root) == []
    # Not unpacked at all: the write it needs fails with the file system's error.
    shutil.rmtree(cache_root / "cifar10-png")
    with read_only(cache_root), pytest.raises(OSError) as raised:
        load_cifar10(data_folder, var, allow_download=False)
    assert raised.value.errno in (errno.EROFS, errno.EACCES)
    assert "fill.lock" not in str(raised.value)


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
