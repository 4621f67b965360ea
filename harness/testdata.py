"""Where the tests find their data: ``FDL_TEST_DATA_DIR``, else ``../shared/data`` beside the
checkout, else a cache under ``var/test-data`` that the first run fills from the internet.

The cache holds what the tests read: MNIST's four IDX files (from the worker's mirror) and
``cifar10/cifar10-test-first1000-exact.npz``, the first 1,000 CIFAR-10 test images cut from the
worker's CIFAR-10 tarball (which is deleted afterwards). Every file is checked against the
SHA-256 of its content before it enters the cache; a mismatch leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from harness.procs import REPO_ROOT
from training.data import cifar, mnist
from training.data.download import download

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CACHE_DIR = REPO_ROOT / "var" / "test-data"
CIFAR_EXACT = "cifar10-test-first1000-exact.npz"
CIFAR_EXACT_COUNT = 1000
# SHA-256 of each decompressed IDX file (as in the original distribution), by file name.
_MNIST_CONTENT_SHA256 = {
    "x_train": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "y_train": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "x_test": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "y_test": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_SHA256 = {mnist.FILES[key]: digest for key, digest in _MNIST_CONTENT_SHA256.items()}
# SHA-256 of the raw uint8 bytes of CIFAR-10's first 1,000 test images and labels.
CIFAR_EXACT_SHA256 = {
    "x_test": "da362006b99671213d1a5d856cab2bedf64d40bad4501630ee60f4ceb2d3ec7f",
    "y_test": "636a087e604331a0b9dafc94b6e9ade0c9cec72c4400d12473ccdb3e264474c1",
}


class DataFetchError(RuntimeError):
    """The test data could not be fetched or did not match its checksum."""


def find_test_data(
    shared: Path = SHARED_DATA, cache: Path = CACHE_DIR, **sources: str | float
) -> Path:
    """The data folder the tests read, fetching it into the cache when there is none."""
    explicit = os.environ.get("FDL_TEST_DATA_DIR")
    if explicit:
        return Path(explicit)
    if (shared / "mnist").is_dir():
        return shared
    return fetch_test_data(cache, **sources)  # type: ignore[arg-type]


def fetch_test_data(
    cache: Path,
    mnist_url: str = mnist.MIRROR,
    cifar_url: str = cifar.URL,
    timeout_s: float = 120,
) -> Path:
    """Fill ``cache`` once (what is there and verified is kept) and return it. Processes that
    fill one cache at once (pytest-xdist's test processes on a fresh clone) take turns under a
    file lock: the first fetches, the others then find the files there."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = open(cache / ".fetch.lock", "a")  # noqa: SIM115 (held for the whole fetch)
    except OSError as error:
        raise DataFetchError(f"could not make the test data cache {cache}: {error}") from error
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, digest in MNIST_SHA256.items():
            target = cache / "mnist" / name
            if not target.is_file():
                _fetch_verified(mnist_url + name, target, digest, timeout_s)
        exact = cache / "cifar10" / CIFAR_EXACT
        if not exact.is_file():
            _fetch_cifar_exact(cifar_url, exact, timeout_s)
    return cache


def _fetch_verified(url: str, target: Path, digest: str, timeout_s: float) -> None:
    part = target.with_name(f".{target.name}.download")
    try:
        download(url, part, timeout_s)
        with gzip.open(part, "rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()  # type: ignore[arg-type]
        if actual != digest:
            raise DataFetchError(f"{url}: SHA-256 {actual} of its content, expected {digest}")
        os.replace(part, target)
    except OSError as error:
        raise DataFetchError(f"could not fetch {url} into {target.parent}: {error}") from error
    finally:
        part.unlink(missing_ok=True)


def _fetch_cifar_exact(url: str, target: Path, timeout_s: float) -> None:
    """The first test images and labels out of the CIFAR-10 python tarball, verified."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tarball = target.with_name(".cifar-10-python.tar.gz.download")
    try:
        download(url, tarball, timeout_s)
        with tarfile.open(tarball, "r:gz") as archive:
            member = archive.extractfile(f"{cifar.BATCHES_DIR}/test_batch")
            if member is None:
                raise DataFetchError(f"{url} has no {cifar.BATCHES_DIR}/test_batch")
            batch = pickle.load(io.BytesIO(member.read()), encoding="bytes")
        images = np.asarray(batch[b"data"][:CIFAR_EXACT_COUNT], np.uint8)
        arrays = {
            "x_test": images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(),
            "y_test": np.asarray(batch[b"labels"][:CIFAR_EXACT_COUNT], np.uint8),
        }
        for key, digest in CIFAR_EXACT_SHA256.items():
            actual = hashlib.sha256(arrays[key].tobytes()).hexdigest()
            if actual != digest:
                raise DataFetchError(f"{url}: SHA-256 {actual} of the first {key}, want {digest}")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except (OSError, tarfile.TarError, pickle.UnpicklingError, KeyError) as error:
        raise DataFetchError(f"could not fetch CIFAR-10 from {url}: {error}") from error
    finally:
        tarball.unlink(missing_ok=True)
