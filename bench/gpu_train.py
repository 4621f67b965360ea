"""GPU training benchmark: ``mnist_cnn`` and ``cifar10_cnn_bn`` against a wall-clock budget.

    python bench/gpu_train.py [--budget-s 540] [--out result.json]
    python bench/gpu_train.py --smoke        # a few steps on CPU, to check the script runs

Uses the project's own pipelines, models, optimizer and precision policy (mixed float16 and
MirroredStrategy over all visible GPUs, as the worker does). After every epoch the test set is
evaluated; the script reports the time to 99% test accuracy (MNIST) and the time to the best test
accuracy reached within the budget. One prepared run, at most ~10 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import keras
import tensorflow as tf
from training_common import DEFAULT_DATA, ROOT

from fdl.jobspec import JobSpec
from training.data.registry import load_dataset
from training.models import ARCHITECTURES, build_model
from training.pipeline import eval_dataset, split_validation, train_dataset
from training.preprocess import network_input_shape
from training.trainer import compile_model, runtime


class TestAccuracyClock(keras.callbacks.Callback):
    """Evaluates the test set after each epoch; stops when the budget is spent."""

    def __init__(self, test_ds, target: float | None, budget_s: float) -> None:
        super().__init__()
        self.test_ds, self.target, self.budget_s = test_ds, target, budget_s
        self.curve: list[dict] = []
        self.time_to_target: float | None = None

    def on_train_begin(self, logs=None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        train_s = time.perf_counter() - self.start
        _, accuracy = self.model.evaluate(self.test_ds, verbose=0)
        self.curve.append(
            {
                "epoch": epoch + 1,
                "seconds": round(train_s, 2),
                "test_accuracy": round(float(accuracy), 5),
            }
        )
        if self.target and self.time_to_target is None and accuracy >= self.target:
            self.time_to_target = round(train_s, 2)
        if time.perf_counter() - self.start > self.budget_s:
            self.model.stop_training = True


def dataset_label(name: str, source: str) -> str:
    if name == "cifar10":
        return "CIFAR-10 (JPEG q75)" if "jpeg" in source.lower() else "CIFAR-10"
    return name.upper() if name == "mnist" else name


def run(key: str, spec: JobSpec, budget_s: float, data_dir: Path, var_dir: Path, smoke: bool):
    arch = ARCHITECTURES[key]
    data = load_dataset(str(spec.dataset), arch.image_shape, data_dir, var_dir, allow_download=True)
    if smoke:
        data = data.capped(256, 128)
    (x, y), _ = split_validation(data.x_train, data.y_train, 0)
    with runtime(spec.seed, mixed_precision=True) as info:
        strategy = info.pop("_strategy")
        batch = spec.batch_size * strategy.num_replicas_in_sync
        train_ds = train_dataset(x, y, arch.family, batch, spec.seed, bool(spec.augment))
        test_ds = eval_dataset(data.x_test, data.y_test, arch.family, 1024)
        with strategy.scope():
            model = build_model(
                key, network_input_shape(arch.image_shape, arch.family), 10, spec.regularization
            )
            compile_model(model, spec)
        clock = TestAccuracyClock(test_ds, 0.99 if arch.family == "mnist" else None, budget_s)
        started = time.perf_counter()
        model.fit(train_ds, epochs=spec.epochs, callbacks=[clock], shuffle=False, verbose=0)
        wall = time.perf_counter() - started
    best = max(clock.curve, key=lambda row: row["test_accuracy"])
    return {
        "model": key,
        "dataset": dataset_label(str(spec.dataset), data.source),
        "device": [d.name for d in tf.config.list_physical_devices("GPU")] or ["CPU"],
        **info,
        "batch_size": batch,
        "epochs_run": len(clock.curve),
        "images_per_second": round(len(x) * len(clock.curve) / wall, 1),
        "time_to_99_s": clock.time_to_target,
        "best_test_accuracy": best["test_accuracy"],
        "time_to_best_s": best["seconds"],
        "curve": clock.curve,
        "steps_per_epoch": math.ceil(len(x) / batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget-s", type=float, default=540, help="both models together")
    parser.add_argument("--smoke", action="store_true", help="a few steps, for CPU checks")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var")
    parser.add_argument("--cifar-dataset", default="cifar10", help="or an image-folder dataset")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    plans = [
        ("mnist_cnn", 0.4, {"epochs": 40, "batch_size": 128}),
        ("cifar10_cnn_bn", 0.6, {"epochs": 200, "batch_size": 128}),
    ]
    results = []
    for key, share, overrides in plans:
        if args.smoke:
            overrides = {"epochs": 1, "batch_size": 64}
        if key.startswith("cifar10"):
            overrides = {**overrides, "dataset": args.cifar_dataset}
        spec = JobSpec(model=key, optimizer={"name": "adam", "learning_rate": 0.001}, **overrides)
        results.append(
            run(key, spec, args.budget_s * share, args.data_dir, args.var_dir, args.smoke)
        )
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
