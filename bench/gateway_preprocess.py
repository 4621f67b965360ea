"""Preprocessing a 4032x3024 phone-photo JPEG: the gateway's pipeline vs a naive one.

Naive: decode the full-size JPEG, convert to RGB, resize the shorter side to the model input with
antialiasing, centre-crop. Gateway: ``api.image_decode.decode_image`` with the model's input size
(libjpeg decodes at 1/8 scale via Pillow's draft mode, then EXIF/alpha/mode normalisation) and
``api.preprocess.photo_to_array``. Both produce the same 224x224 (or 32x32) crop.
Goal (issue 5): >= 5x faster. The photo is synthetic (a CIFAR-10 test image upscaled, with
camera-like noise), JPEG quality 90, the size and byte count of a typical phone photo.

    python bench/gateway_preprocess.py [--repeat 7] [--size 224]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from api.image_decode import decode_image  # noqa: E402
from api.preprocess import decode_size, photo_to_array  # noqa: E402


def phone_photo(data_dir: Path) -> bytes:
    rng = np.random.default_rng(0)
    exact = data_dir / "cifar10" / "cifar10-test-first1000-exact.npz"
    if exact.exists():
        with np.load(exact) as archive:
            key = next(k for k in archive.files if archive[k].ndim == 4)
            small = Image.fromarray(archive[key][0])
    else:  # the benchmark must not require the data folder
        small = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    big = np.asarray(small.resize((4032, 3024), Image.Resampling.BICUBIC), np.float32)
    big += rng.normal(0, 6, big.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def naive(data: bytes, size: int) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    scale = size / min(image.size)
    resized = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
    )
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)))


def gateway(data: bytes, size: int) -> np.ndarray:
    return photo_to_array(decode_image(data, decode_size("photo", (size, size))), (size, size))


def interleaved(data: bytes, size: int, repeat: int) -> tuple[list[float], list[float]]:
    """Alternate the two so that both see the same machine load (shared CPUs)."""
    naive(data, size), gateway(data, size)  # warm-up
    naive_ms, ours_ms = [], []
    for _ in range(repeat):
        for function, times in ((naive, naive_ms), (gateway, ours_ms)):
            start = time.perf_counter()
            function(data, size)
            times.append((time.perf_counter() - start) * 1000)
    return naive_ms, ours_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    data = phone_photo(args.data_dir)
    print(f"photo: 4032x3024 JPEG, {len(data) / 1e6:.1f} MB; target {args.size}x{args.size}")
    naive_times, ours_times = interleaved(data, args.size, args.repeat)
    naive_ms, ours_ms = statistics.median(naive_times), statistics.median(ours_times)
    reference, result = naive(data, args.size), gateway(data, args.size)
    difference = np.abs(reference.astype(int) - result.astype(int)).mean()
    print(f"  naive full decode + resize: {naive_ms:8.1f} ms (median of {args.repeat})")
    print(f"  gateway (draft decode):     {ours_ms:8.1f} ms")
    print(f"  speed-up: {naive_ms / ours_ms:.1f}x (goal >= 5x)")
    print(f"  mean absolute pixel difference of the two crops: {difference:.2f} / 255")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
