"""A fresh clone without ../shared/data: the tests fetch their data once into a cache, verified.

The "internet" is a local HTTP server serving the same files the real mirrors do (MNIST's IDX
files; a CIFAR-10 python tarball whose test batch starts with the real first 1,000 images).
"""

from __future__ import annotations

import gzip
import pickle
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.procs import REPO_ROOT, Process, free_port, wait_for
from harness.testdata import (
    CIFAR_EXACT,
    MNIST_SHA256,
    DataFetchError,
    fetch_test_data,
    find_test_data,
)


def cifar_tarball(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    batch = {b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"labels": [int(v) for v in y]}
    member = path.parent / "test_batch"
    member.write_bytes(pickle.dumps(batch))
    with tarfile.open(path, "w:gz") as archive:
        archive.add(member, arcname="cifar-10-batches-py/test_batch")
    member.unlink()


@pytest.fixture
def mirror(tmp_path: Path, data_dir: Path, logs_dir: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server with mnist/ and cifar/ folders laid out like the real sources."""
    root = tmp_path / "mirror"
    (root / "mnist").mkdir(parents=True)
    for name in MNIST_SHA256:
        shutil.copy(data_dir / "mnist" / name, root / "mnist" / name)
    (root / "cifar").mkdir()
    with np.load(data_dir / "cifar10" / CIFAR_EXACT) as exact:
        cifar_tarball(root / "cifar" / "cifar-10-python.tar.gz", exact["x_test"], exact["y_test"])
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = Process("mirror", [*argv, "--directory", str(root)], logs_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url, timeout=2).status_code == 200, 20, "the mirror")
        yield url, root
    finally:
        server.stop()


def test_a_fresh_clone_fetches_its_test_data_once(
    mirror: tuple[str, Path], tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = mirror
    monkeypatch.delenv("FDL_TEST_DATA_DIR", raising=False)
    sources = {"mnist_url": f"{url}/mnist/", "cifar_url": f"{url}/cifar/cifar-10-python.tar.gz"}
    cache = tmp_path / "var" / "test-data"
    found = find_test_data(shared=tmp_path / "no-shared-data", cache=cache, **sources)
    assert found == cache
    for name in MNIST_SHA256:
        assert (cache / "mnist" / name).read_bytes() == (data_dir / "mnist" / name).read_bytes()
    with (
        np.load(cache / "cifar10" / CIFAR_EXACT) as fetched,
        np.load(data_dir / "cifar10" / CIFAR_EXACT) as exact,
    ):
        assert np.array_equal(fetched["x_test"], exact["x_test"])
        assert np.array_equal(fetched["y_test"], exact["y_test"])
    # Only the verified files stay: no tarball, no partial downloads.
    assert sorted(p.name for p in (cache / "cifar10").iterdir()) == [CIFAR_EXACT]
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(MNIST_SHA256)

    # Once fetched, the cache is used as it is: no source needed any more.
    shutil.rmtree(root / "mnist")
    shutil.rmtree(root / "cifar")
    assert find_test_data(shared=tmp_path / "no-shared-data", cache=cache, **sources) == cache
    # And shared data, where present, wins over the cache.
    assert find_test_data(shared=data_dir, cache=cache) == data_dir


def test_a_corrupt_download_is_refused_and_leaves_nothing(
    mirror: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = mirror
    bad = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels = bytearray(gzip.decompress(bad.read_bytes()))
    labels[-1] ^= 1  # one wrong label
    bad.write_bytes(gzip.compress(bytes(labels)))
    cache = tmp_path / "cache"
    with pytest.raises(DataFetchError, match="SHA-256"):
        fetch_test_data(cache, mnist_url=f"{url}/mnist/", cifar_url=f"{url}/cifar/x.tar.gz")
    assert not (cache / "mnist" / bad.name).exists()
    assert not [p for p in (cache / "mnist").iterdir() if p.name.startswith(".")]


def test_an_unreachable_source_says_where_it_failed(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(DataFetchError, match=f"127.0.0.1:{port}"):
        fetch_test_data(tmp_path, mnist_url=f"http://127.0.0.1:{port}/", timeout_s=2)


FETCH_WHEN_TOLD = """
import sys
from pathlib import Path
from harness.testdata import fetch_test_data
sys.stdin.read(1)  # all start together
fetch_test_data(Path(sys.argv[1]), mnist_url=sys.argv[2], cifar_url=sys.argv[3])
"""


def test_test_processes_that_fetch_at_once_take_turns(
    mirror: tuple[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    """pytest-xdist's test processes each ask for the data as they start: on a fresh clone they
    fetch into one cache at once. Before, they wrote the same partial files over each other."""
    url, _ = mirror
    cache = tmp_path / "cache"
    argv = [sys.executable, "-c", FETCH_WHEN_TOLD, str(cache), f"{url}/mnist/"]
    argv.append(f"{url}/cifar/cifar-10-python.tar.gz")
    fetchers = [
        subprocess.Popen(
            argv, cwd=REPO_ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    for fetcher in fetchers:
        assert fetcher.stdin is not None
        fetcher.stdin.write("go")
    for fetcher in fetchers:
        assert fetcher.stdin is not None
        fetcher.stdin.close()
    outcomes = [(fetcher.wait(timeout=120), fetcher.stderr.read()) for fetcher in fetchers]  # type: ignore[union-attr]
    assert all(code == 0 for code, _ in outcomes), outcomes
    for name in MNIST_SHA256:
        assert (cache / "mnist" / name).read_bytes() == (data_dir / "mnist" / name).read_bytes()
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(MNIST_SHA256)
