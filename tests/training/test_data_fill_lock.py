"""The fill lock of dataset caches: a load that finds someone filling the cache (a live worker,
another user's) never sweeps its file in progress, and a complete cache in a read-only folder,
where the lock cannot be created, is read without it. Real files, real processes killed
mid-write, a real read-only bind mount where root may mount. The sweep itself (a full disk, a
crashed load or download) is test_data_leftovers.py's."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.training.cache_files import ROOT, hidden
from training.data.cifar import load_cifar10
from training.data.leftovers import LOCK_NAME, filling

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
        pytest.skip("platform: needs root, to own the lock file and run a filler as another user")
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
            pytest.skip(f"platform: cannot mount {folder} read-only: {done.stderr.strip()}")
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
