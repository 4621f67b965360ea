"""Training throughput of our input pipeline vs a plain ``model.fit(numpy arrays)``, same run.

    .venv/bin/python bench/training_throughput.py [--model mnist_mlp] [--examples 30000]

Both train the same architecture with the same optimizer and batch size for ``--epochs`` epochs;
the first epoch (tracing, warm-up) is discarded and images/s is measured over the others.
Prints ours / baseline (goal >= 1.2).
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np
from training_common import DEFAULT_DATA

from fdl.jobspec import JobSpec
from training.data.registry import load_dataset
from training.models import ARCHITECTURES, build_model
from training.pipeline import train_dataset
from training.preprocess import network_input_shape
from training.settings import DEFAULT_STEPS_PER_EXECUTION
from training.trainer import compile_model


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def measure(
    model_key: str, fit_input, examples: int, epochs: int, spec: JobSpec, spe: int = 1, **fit_kw
):
    arch = ARCHITECTURES[model_key]
    keras.utils.set_random_seed(0)
    model = build_model(
        model_key, network_input_shape(arch.image_shape, arch.family), 10, spec.regularization
    )
    compile_model(model, spec, steps_per_execution=spe)
    timer = EpochTimer()
    model.fit(*fit_input, epochs=epochs, callbacks=[timer], verbose=0, **fit_kw)
    steady = timer.seconds[1:]
    return examples * len(steady) / sum(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", default="mnist_mlp", choices=["mnist_logreg", "mnist_mlp", "mnist_cnn"]
    )
    parser.add_argument("--examples", type=int, default=30_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="alternate ours/baseline N times")
    args = parser.parse_args()
    spec = JobSpec(model=args.model, batch_size=args.batch_size)
    arch = ARCHITECTURES[args.model]
    data = load_dataset("mnist", arch.image_shape, DEFAULT_DATA, DEFAULT_DATA, False)
    x, y = data.x_train[: args.examples], data.y_train[: args.examples]
    x_float = x.astype(np.float32) / 255.0  # the baseline gets preprocessed float arrays
    ours, baseline = [], []
    for _ in range(args.rounds):
        ds = train_dataset(x, y, arch.family, args.batch_size, seed=0, augment=False)
        ours.append(
            measure(
                args.model,
                (ds,),
                len(x),
                args.epochs,
                spec,
                spe=DEFAULT_STEPS_PER_EXECUTION,
                shuffle=False,
            )
        )
        baseline.append(
            measure(
                args.model,
                (x_float, y),
                len(x),
                args.epochs,
                spec,
                batch_size=args.batch_size,
                shuffle=True,
            )
        )
    row = {
        "model": args.model,
        "examples": len(x),
        "batch_size": args.batch_size,
        "ours_images_per_second": round(float(np.median(ours)), 1),
        "baseline_images_per_second": round(float(np.median(baseline)), 1),
        "ratio": round(float(np.median(ours) / np.median(baseline)), 3),
        "all_ours": [round(v, 1) for v in ours],
        "all_baseline": [round(v, 1) for v in baseline],
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
