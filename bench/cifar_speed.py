"""Is the input pipeline the bottleneck? Images/s of each CIFAR net's training input pipeline
alone, of its training steps on pre-made batches, and of training fed by the pipeline.

    .venv/bin/python bench/cifar_speed.py [--seconds 5] [--models cifar10_airnet ...]

Uses the real pipelines (``training.pipeline.train_dataset``) with each recipe's augmentation,
the real models and compile (``training.trainer.compile_model``); each timed ``fit`` is one call
into the compiled graph of about ``--train-images`` images. Images are the 1,000 exact CIFAR-10
test images of ../shared/data, repeated (the content does not matter for speed). The pipeline is
fast enough when ``pipeline_images_per_s`` is well above ``train_images_per_s`` and
``fed_images_per_s`` is close to ``train_images_per_s``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from training_common import DEFAULT_DATA

from fdl.jobspec import JobSpec
from training.models import ARCHITECTURES, build_model, prepare_model
from training.pipeline import train_dataset
from training.preprocess import network_input_shape
from training.recipes import augmentation, recipe_for, regularization_for
from training.trainer import compile_model, runtime

CASES = [
    ("cifar10_cnn", "book"),
    ("cifar10_cnn", "fast"),
    ("cifar10_cnn_bn", "book"),
    ("cifar10_cnn_bn", "fast"),
    ("cifar10_airnet", "fast"),
]


def pipeline_rate(ds: tf.data.Dataset, seconds: float) -> float:
    iterator = iter(ds.repeat())
    next(iterator)  # builds the pipeline; not timed
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        images += int(next(iterator)[1].shape[0])
    return images / (time.perf_counter() - started)


def fit_rate(model, ds: tf.data.Dataset, batch: int, steps: int) -> float:
    """Images/s of one ``fit`` call of ``steps`` batches of ``ds`` (repeated), after an untimed
    call that traces and compiles the training function."""
    ds = ds.repeat()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - started)


def measure(key: str, recipe: str, x, y, seconds: float, train_images: int) -> dict:
    spec = JobSpec(model=key, recipe=recipe)
    arch = ARCHITECTURES[key]
    mode = augmentation(spec, arch.family)
    with runtime(spec.seed, True, recipe_for(spec).cpu_bfloat16) as info:
        ds = train_dataset(x, y, arch.family, spec.batch_size, spec.seed, mode)
        pipeline = pipeline_rate(ds, seconds)
        # Pre-made batches: the same tensors every step, so only the training step is timed.
        made = ds.take(4).cache()
        list(made)
        model = build_model(
            key, network_input_shape(arch.image_shape, arch.family), 10, regularization_for(spec)
        )
        prepare_model(key, model, x)
        # One call into the compiled graph per fit: all steps run as one execution.
        steps = max(2, round(train_images / spec.batch_size))
        compile_model(model, spec, steps, total_steps=10_000)
        train = fit_rate(model, made, spec.batch_size, steps)
        fed = fit_rate(model, ds, spec.batch_size, steps)
    return {
        "model": key,
        "recipe": recipe,
        "augmentation": mode,
        "batch_size": spec.batch_size,
        "precision_policy": info["precision_policy"],
        "pipeline_images_per_s": round(pipeline, 1),
        "train_images_per_s": round(train, 1),
        "fed_images_per_s": round(fed, 1),
        "pipeline_to_train_ratio": round(pipeline / train, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="of pipeline alone")
    parser.add_argument(
        "--train-images", type=int, default=1024, help="images per timed training call"
    )
    parser.add_argument("--models", nargs="*", help="only these models")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, help="append JSON lines here")
    args = parser.parse_args()
    with np.load(args.data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        reps = -(-args.images // len(exact["x_test"]))
        x = np.tile(exact["x_test"], (reps, 1, 1, 1))[: args.images]
        y = np.tile(exact["y_test"].astype(np.int64), reps)[: args.images]
    for key, recipe in CASES:
        if args.models and key not in args.models:
            continue
        row = measure(key, recipe, x, y, args.seconds, args.train_images)
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
