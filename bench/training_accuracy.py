"""Accuracy and wall time per architecture on the real data, through the real job function.

    .venv/bin/python bench/training_accuracy.py mnist_logreg mnist_mlp [--epochs N]

Prints test accuracy against the issue's target (ratio >= 1.0 means the target is met) and the
wall time of the whole job (data loading, training, evaluation, export, publication).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from training_common import DEFAULT_DATA, ROOT, private_store

from fdl.jobspec import JobSpec
from training.job import run_job
from training.settings import WorkerSettings

# The recipes used for the numbers in docs/training.md.
RECIPES: dict[str, dict[str, Any]] = {
    "mnist_logreg": {"epochs": 15, "batch_size": 100, "optimizer": {"name": "adam"}},
    "mnist_mlp": {
        "epochs": 30,
        "batch_size": 128,
        "optimizer": {"name": "adam", "learning_rate": 0.001},
        "regularization": {"dropout": 0.2},
        "early_stopping": {"patience": 5, "monitor": "val_accuracy"},
    },
    "mnist_cnn": {
        "epochs": 12,
        "batch_size": 128,
        "optimizer": {"name": "adam", "learning_rate": 0.0005},
        "early_stopping": {"patience": 4, "monitor": "val_accuracy"},
    },
    "cifar10_cnn_bn": {
        "epochs": 12,
        "batch_size": 128,
        "optimizer": {"name": "adam", "learning_rate": 0.001},
    },
}
TARGETS = {"mnist_logreg": 0.92, "mnist_mlp": 0.98, "mnist_cnn": 0.992}
LABEL = {"cifar10_cnn_bn": "CIFAR-10 (JPEG q75)", "cifar10_cnn": "CIFAR-10 (JPEG q75)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--max-train", type=int, help="cap the training examples")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var")
    parser.add_argument("--out", type=Path, help="append JSON lines with the results here")
    args = parser.parse_args()
    with private_store() as store, tempfile.TemporaryDirectory() as models:
        settings = WorkerSettings(
            redis_url="redis://unused",
            data_dir=args.data_dir,
            var_dir=args.var_dir,
            model_dir=Path(models),
            download=False,
        )
        for key in args.models:
            recipe = dict(RECIPES[key])
            if args.epochs:
                recipe["epochs"] = args.epochs
            spec = JobSpec(model=key, max_train_examples=args.max_train, **recipe)
            record = store.create(spec.model_dump(mode="json"))
            started = time.monotonic()
            result = run_job(record["id"], store, settings)
            wall = time.monotonic() - started
            final = store.get(record["id"])
            if result is None:
                print(f"{key}: {final['status']}: {final['error']}")
                continue
            accuracy = result["metrics"]["test_accuracy"]
            target = TARGETS.get(key)
            row = {
                "model": key,
                "dataset": LABEL.get(key, "MNIST"),
                "epochs_run": result["epochs_run"],
                "test_accuracy": accuracy,
                "target": target,
                "ratio_to_target": round(accuracy / target, 4) if target else None,
                "wall_seconds": round(wall, 1),
                "images_per_second": final["progress"].get("images_per_second"),
                "recipe": recipe,
            }
            print(json.dumps(row))
            if args.out:
                with args.out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
