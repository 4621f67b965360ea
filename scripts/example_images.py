"""Write the example images the README and docs classify, from the real test data.

    .venv/bin/python scripts/example_images.py [--data-dir DIR] [--out examples]

(`make examples` runs it.) Into ``--out`` (default ``./examples``):

- ``digit.png``: the first MNIST test digit (a 7), 28x28 grayscale, as the models see it;
- ``digit.jpg``: the same digit as a JPEG (quality 95);
- ``digits/NNNN-L.png``: the first ten MNIST test digits, ``L`` their true label;
- ``cat.jpg``: the first CIFAR-10 test image (a cat), 32x32 RGB from the exact pixels
  (``cifar10/cifar10-test-first1000-exact.npz``), skipped with a note when that file is absent.

The data is looked for where the worker and the tests look: ``--data-dir``, else
``FDL_DATA_DIR`` (the worker's, default ``./var/data``), else ``FDL_TEST_DATA_DIR``, else
``../shared/data`` beside the checkout, else ``var/test-data`` (what `make test` downloads). MNIST
is read from ``<dir>/mnist/`` or ``<dir>/`` (the four original IDX files, gzipped).
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a file: the project's packages are importable

from training.data.cifar import CLASS_NAMES  # noqa: E402  (no TensorFlow: a list of names)

MNIST_IMAGES = "t10k-images-idx3-ubyte.gz"
MNIST_LABELS = "t10k-labels-idx1-ubyte.gz"
CIFAR_EXACT = Path("cifar10") / "cifar10-test-first1000-exact.npz"
DIGITS = 10


def candidates(explicit: Path | None) -> list[Path]:
    if explicit is not None:
        return [explicit]
    found = [os.environ.get(name) for name in ("FDL_DATA_DIR", "FDL_TEST_DATA_DIR")]
    dirs = [Path(d) for d in found if d]
    if not os.environ.get("FDL_DATA_DIR"):
        dirs.append(Path("var/data"))
    return [*dirs, REPO_ROOT.parent / "shared" / "data", REPO_ROOT / "var" / "test-data"]


def mnist_folder(data_dir: Path) -> Path | None:
    for folder in (data_dir / "mnist", data_dir):
        if (folder / MNIST_IMAGES).is_file() and (folder / MNIST_LABELS).is_file():
            return folder
    return None


def mnist_test(folder: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(folder / MNIST_IMAGES) as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / MNIST_LABELS) as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images[:count], labels[:count]


def write(out: Path, data_dirs: list[Path]) -> list[Path]:
    """The files written (MNIST's always; CIFAR-10's when its exact test images are found)."""
    mnist = next((f for d in data_dirs if (f := mnist_folder(d)) is not None), None)
    if mnist is None:
        looked = ", ".join(str(d) for d in data_dirs)
        raise SystemExit(f"no MNIST test files ({MNIST_IMAGES}, {MNIST_LABELS}) in: {looked}")
    images, labels = mnist_test(mnist, DIGITS)
    (out / "digits").mkdir(parents=True, exist_ok=True)
    written = [out / "digit.png", out / "digit.jpg"]
    Image.fromarray(images[0]).save(written[0])
    Image.fromarray(images[0]).save(written[1], quality=95)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = out / "digits" / f"{index:04d}-{label}.png"
        Image.fromarray(image).save(path)
        written.append(path)
    print(f"MNIST test digits from {mnist} (digit.png is a {labels[0]})")
    cifar = next((d / CIFAR_EXACT for d in data_dirs if (d / CIFAR_EXACT).is_file()), None)
    if cifar is None:
        print(f"no {CIFAR_EXACT} found: cat.jpg not written", file=sys.stderr)
        return written
    with np.load(cifar) as arrays:
        image, label = arrays["x_test"][0], int(arrays["y_test"][0])
    Image.fromarray(image).save(out / "cat.jpg", quality=95)
    written.append(out / "cat.jpg")
    print(f"CIFAR-10 test image 0 from {cifar} (cat.jpg is a {CLASS_NAMES[label]})")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="where mnist/ (and cifar10/) are")
    parser.add_argument("--out", type=Path, default=Path("examples"), help="default ./examples")
    args = parser.parse_args(argv)
    written = write(args.out, candidates(args.data_dir))
    print(f"wrote {len(written)} files under {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
