"""Build tiny SavedModels that obey fdl/contract.py, for tests, demos and benchmarks.

    .venv/bin/python scripts/make_test_models.py OUT_DIR [--name tiny] [--versions 1 2]
        [--shape 28 28 1] [--classes 10] [--seed 0] [--architecture tiny|cnn] [--warmup 0]

Writes ``OUT_DIR/<name>/<version>/`` (each version seeded with ``seed + version``) and prints the
folders. The builder itself is :func:`harness.models.build_test_model` (the test harness,
outside the production packages), importable from here too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.models import build_test_model, mnist_cnn, sample_images

__all__ = ["build_test_model", "mnist_cnn", "sample_images"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build tiny contract-conforming SavedModels.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", default="tiny")
    parser.add_argument("--versions", type=int, nargs="+", default=[1])
    parser.add_argument("--shape", type=int, nargs="+", default=[28, 28, 1])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architecture", choices=["tiny", "cnn"], default="tiny")
    parser.add_argument("--warmup", type=int, default=0, help="warmup requests to write")
    args = parser.parse_args(argv)
    for version in args.versions:
        path = build_test_model(
            args.out_dir / args.name / str(version),
            input_shape=tuple(args.shape),
            num_classes=args.classes,
            seed=args.seed + version,
            warmup_requests=args.warmup,
            model_name=args.name,
            architecture=args.architecture,
        )
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
