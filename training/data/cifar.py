"""CIFAR-10: the original python batches, an image-folder export, or a tarball of either.

A tarball (``cifar-10-python.tar.gz`` or an image-folder export such as ``cifar10-jpeg.tar.gz``)
is unpacked once into ``<var_dir>/cache/datasets/`` (the data folder may be read-only); decoded
arrays are cached there as ``arrays.npz`` so that later jobs start fast. Each is written under a
temporary name and renamed into place; a write that fails removes its temporary, and what a
crashed process left is swept (:mod:`training.data.leftovers`).
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from training.data import IMAGE_FOLDER, PYTHON_BATCHES, DataMissingError, ImageData
from training.data.download import download
from training.data.errors import FIX, READ_ERRORS, DataUnreadableError, check_labels, unreadable
from training.data.folder import is_image_folder, load_image_folder
from training.data.leftovers import filling

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
BATCHES_DIR = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SHAPE = (32, 32, 3)
# The temporaries of the cache (relative to its root): every hidden entry of the root (tarballs
# being unpacked, downloads in progress) and arrays being saved in an unpacked tree.
CACHE_LEFTOVERS = (".*", "*/.arrays.*.npz")


def load_batches(folder: Path) -> ImageData:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        try:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            rows = np.asarray(batch[b"data"], np.uint8)
            labels = np.asarray(batch[b"labels"], np.int64)
        except READ_ERRORS as error:
            raise unreadable(path, error, "CIFAR-10 batch") from error
        except (KeyError, TypeError, ValueError, IndexError) as error:
            what = f"{type(error).__name__}: {error}"
            raise DataUnreadableError(f"{path} is not a CIFAR-10 batch ({what}): {FIX}") from error
        if rows.ndim != 2 or rows.shape[1] != 32 * 32 * 3 or len(rows) != len(labels):
            raise DataUnreadableError(
                f"{path} holds {len(labels)} labels and images of shape {list(rows.shape)} "
                f"(a CIFAR-10 batch: one label per row of 3072 bytes): {FIX}"
            )
        check_labels(path, labels, len(CLASS_NAMES))
        return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = read("test_batch")
    return ImageData(
        "cifar10",
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        x_test,
        y_test,
        CLASS_NAMES,
        str(folder),
        PYTHON_BATCHES,
    )


def _find_tree(root: Path) -> tuple[Path, str] | None:
    """Where CIFAR-10 lies in ``root`` or one level below it, and in which layout."""
    for base in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        if (base / BATCHES_DIR / "test_batch").is_file():
            return base / BATCHES_DIR, PYTHON_BATCHES
        if (base / "test_batch").is_file() and base.name == BATCHES_DIR:
            return base, PYTHON_BATCHES
        if is_image_folder(base):
            return base, IMAGE_FOLDER
    return None


def _from_tree(root: Path) -> ImageData | None:
    """CIFAR-10 in ``root`` or one level below it, in either layout."""
    found = _find_tree(root)
    if found is None:
        return None
    base, layout = found
    if layout == PYTHON_BATCHES:
        return load_batches(base)
    return load_image_folder(base, "cifar10", SHAPE, CLASS_NAMES)


def _tarballs(data_dir: Path) -> list[Path]:
    found: list[Path] = []
    for folder in (data_dir / "cifar10", data_dir):
        if folder.is_dir():
            found += sorted(p for p in folder.glob("*.tar.gz") if "cifar" in p.name.lower())
    return found


def unpack_cached(tarball: Path, cache_root: Path) -> Path:
    """Unpack ``tarball`` once into ``cache_root/<stem>``; atomic: no half tree on a crash (the
    caller holds the cache's fill lock, so that its temporary is not swept meanwhile)."""
    target = cache_root / tarball.name.removesuffix(".tar.gz")
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_root, prefix=f".{target.name}."))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            archive.extractall(tmp, filter="data")
        os.rename(tmp, target)
    except READ_ERRORS as error:  # BadGzipFile is an OSError: a damaged tarball comes first
        shutil.rmtree(tmp, ignore_errors=True)
        raise unreadable(tarball, error, "tar.gz") from error
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():  # another worker may have won the race
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def tarball_layout(tarball: Path) -> str | None:
    """CIFAR-10's layout in ``tarball`` by its members' names, as :func:`_find_tree` finds it
    unpacked (at the top or one folder below): read up to the first member that says (the first
    file, as a rule; the archive is decompressed only that far). None: none says, or unreadable."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                parts = [part for part in PurePosixPath(member.name).parts if part != "."]
                if not member.isfile():
                    continue
                if 2 <= len(parts) <= 3 and parts[-2] == BATCHES_DIR:
                    return PYTHON_BATCHES  # [folder/]cifar-10-batches-py/<batch>
                if 3 <= len(parts) <= 4 and parts[-3] in ("train", "test"):
                    return IMAGE_FOLDER  # [folder/]train/<class>/<image>
    except (OSError, tarfile.TarError, EOFError) as error:
        log.warning("cannot read the members of %s: %s", tarball, error)
    return None


def _cached_layout(folder: Path, tarball: Path) -> str | None:
    """The layout of arrays cached before they recorded it: the unpacked tree beside them says,
    else (a tree that was deleted to save space: the arrays were all that loads read) the
    names in the tarball it was unpacked from."""
    found = _find_tree(folder)
    return found[1] if found is not None else tarball_layout(tarball)


def _cached_arrays(folder: Path, tarball: Path) -> ImageData:
    """CIFAR-10 unpacked from ``tarball`` into ``folder``: its cached arrays, else decoded (and
    the arrays cached)."""
    cache = folder / "arrays.npz"
    if cache.is_file():
        try:
            return _read_cache(cache, folder, tarball)
        except CACHE_ERRORS as error:  # cut short, overwritten: decoded again, as if absent
            why = f"{type(error).__name__}: {error}"
            log.warning("%s cannot be read (%s): decoding %s again", cache, why, folder)
    data = _from_tree(folder)
    if data is None:
        if cache.is_file():  # unreadable, and the tree it was decoded from was deleted
            raise DataUnreadableError(
                f"{cache} cannot be read and {folder} no longer holds the images it was decoded "
                f"from: delete {folder} so that {tarball.name} is unpacked and decoded again"
            )
        raise DataMissingError(f"{folder} holds neither {BATCHES_DIR} nor train/ and test/ folders")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".arrays.", suffix=".npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(
                handle,
                x_train=data.x_train,
                y_train=data.y_train,
                x_test=data.x_test,
                y_test=data.y_test,
                layout=np.asarray(data.layout),
            )
        os.replace(tmp, cache)
    except OSError as error:  # a full disk: the job goes on, a later one decodes again
        log.warning("cannot cache the decoded arrays in %s: %s", folder, error)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return replace(data, source=str(folder))  # as the cached arrays' loads say


# What reading a damaged ``arrays.npz`` raises: zipfile.BadZipFile (truncated, not a zip),
# zlib.error, EOFError, OSError, ValueError (a damaged member), KeyError (a missing array).
CACHE_ERRORS = (*READ_ERRORS, zipfile.BadZipFile, OSError, ValueError, KeyError)


def _read_cache(cache: Path, folder: Path, tarball: Path) -> ImageData:
    """The arrays cached in ``cache``, all read (a damaged member raises here, not later)."""
    with np.load(cache) as z:
        layout = str(z["layout"]) if "layout" in z.files else _cached_layout(folder, tarball)
        if layout is None:
            raise DataMissingError(
                f"{cache} was cached without the layout of its images, and neither {folder} "
                f"nor {tarball} says it: delete {folder} so that {tarball.name} is unpacked "
                "and decoded again"
            )
        x_train, y_train, x_test, y_test = (
            z[k] for k in ("x_train", "y_train", "x_test", "y_test")
        )
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ValueError("images and labels of different counts")
    return ImageData("cifar10", x_train, y_train, x_test, y_test, CLASS_NAMES, str(folder), layout)


def load_cifar10(
    data_dir: Path, var_dir: Path, allow_download: bool = True, timeout_s: float = 60
) -> ImageData:
    for root in (data_dir / "cifar10", data_dir):
        if (root / BATCHES_DIR / "test_batch").is_file():
            return load_batches(root / BATCHES_DIR)
        if is_image_folder(root):
            return load_image_folder(root, "cifar10", SHAPE, CLASS_NAMES)
    cache_root = var_dir / "cache" / "datasets"
    tarballs = _tarballs(data_dir)
    if not tarballs and (cache_root / "cifar-10-python.tar.gz").is_file():
        tarballs = [cache_root / "cifar-10-python.tar.gz"]
    if not tarballs and not allow_download:
        raise DataMissingError(_missing(data_dir, "downloads are disabled"))
    with filling(cache_root, CACHE_LEFTOVERS):
        if not tarballs:
            try:
                tarballs = [download(URL, cache_root / "cifar-10-python.tar.gz", timeout_s)]
            except OSError as error:
                raise DataMissingError(_missing(data_dir, f"download failed: {error}")) from error
        return _cached_arrays(unpack_cached(tarballs[0], cache_root), tarballs[0])


def _missing(data_dir: Path, why: str) -> str:
    return (
        f"CIFAR-10 not found: expected {BATCHES_DIR}/, train/ and test/ image folders, or a "
        f"cifar*.tar.gz in {data_dir / 'cifar10'} or {data_dir} (FDL_DATA_DIR); {why}"
    )
