"""Served quality on photos (issue 18 section 3): a CIFAR-10 model through the gateway's photo
profile, on CIFAR-10 test images upscaled to photo sizes, against the same images brought to
32x32 offline with Pillow (Lanczos) and sent straight to the model server.

    .venv/bin/python bench/cifar_photos.py --model-path var/models/cifar10_airnet/1 [--count 1000]

Starts a private stack (Redis, model server, gateway; ``bench/gateway_stack.py``) serving the
given SavedModel as ``cifar-photos`` version 1. Each of the 1,000 exact CIFAR-10 test images of
../shared/data is upscaled with Pillow (bicubic; square, so the aspect is kept) to a photo size
(cycling through ``--sizes``) and encoded as JPEG (quality 90), PNG and WebP (quality 90). Per
format it reports:
  gateway   the encoded photo posted to ``/v1/models/cifar-photos:classify`` (multipart)
  offline   the same encoded photo decoded and resized to 32x32 with Pillow's Lanczos, sent as a
            uint8 tensor to the model server over gRPC (no gateway preprocessing)
and the original 32x32 pixels through gRPC for reference. Goal: gateway within 1 point of
offline for every format.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from gateway_calls import grpc_accuracy, http_accuracy
from gateway_stack import BENCH_KEY, REPO_ROOT, running_stack
from PIL import Image

NAME = "cifar-photos"
FORMATS = {"jpeg": ("JPEG", {"quality": 90}), "png": ("PNG", {}), "webp": ("WEBP", {"quality": 90})}


def photo(image: np.ndarray, size: int, fmt: str) -> bytes:
    big = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    kind, options = FORMATS[fmt]
    buffer = io.BytesIO()
    big.save(buffer, kind, **options)
    return buffer.getvalue()


def offline_32(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.LANCZOS))


def offline_accuracy(target: str, images: np.ndarray, labels: np.ndarray) -> float:
    """32x32 tensors straight to the model server over gRPC."""
    return round(grpc_accuracy(target, NAME, images, labels, batch=200, timeout=120), 4)


def gateway_accuracy(url: str, files: list[bytes], labels: np.ndarray, fmt: str) -> float:
    """The encoded photos through the gateway's multipart classify."""
    headers = {"x-api-key": BENCH_KEY}
    accuracy = http_accuracy(url, NAME, files, labels, fmt, batch=16, timeout=300, headers=headers)
    return round(accuracy, 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path, required=True, help="a published version")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[480, 800, 1200, 2000])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    with np.load(args.data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        images = exact["x_test"][: args.count]
        labels = exact["y_test"][: args.count].astype(np.int64)
    photos = {
        fmt: [photo(img, args.sizes[i % len(args.sizes)], fmt) for i, img in enumerate(images)]
        for fmt in FORMATS
    }
    results: dict = {"count": len(images), "sizes": args.sizes, "model_path": str(args.model_path)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(args.model_path, work / "models" / NAME / "1")
        with running_stack(work / "models", work, {NAME: 1}) as stack:
            results["original_32x32_grpc"] = offline_accuracy(stack.grpc_target, images, labels)
            for fmt, files in photos.items():
                offline = np.stack([offline_32(data) for data in files])
                row = {
                    "offline_lanczos_grpc": offline_accuracy(stack.grpc_target, offline, labels),
                    "gateway_http": gateway_accuracy(stack.url, files, labels, fmt),
                    "mean_bytes": round(float(np.mean([len(f) for f in files]))),
                }
                row["gap_points"] = round(
                    (row["gateway_http"] - row["offline_lanczos_grpc"]) * 100, 2
                )
                row["within_1_point"] = abs(row["gap_points"]) <= 1.0
                results[fmt] = row
                print(fmt, json.dumps(row), flush=True)
    print(json.dumps(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(results[f]["within_1_point"] for f in FORMATS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
