"""Tiny SavedModels that obey :mod:`fdl.contract`, built locally for tests and benchmarks.

Models are small Keras 3 networks with seeded weights, exported with ``keras.export.ExportArchive``
so that TF Serving's Session loader (``tf.compat.v1.saved_model.loader.load``) accepts them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fdl import contract


def _tiny_network(input_shape: Sequence[int], num_classes: int):
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="tiny")


def mnist_cnn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10):
    """The book's MNIST CNN (untrained) from :mod:`training.models`, between the test models'
    own ends: pixels scaled to [0, 1] in, softmax probabilities out."""
    import keras

    from fdl.jobspec import RegularizationSpec
    from training.models import build_model

    network = build_model("mnist_cnn", tuple(input_shape), num_classes, RegularizationSpec())
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    logits = network(keras.layers.Rescaling(1.0 / 255.0)(inputs))
    outputs = keras.layers.Softmax(name="probs")(logits)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def build_test_model(
    path: str | Path,
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    warmup_requests: int = 0,
    model_name: str = "model",
    architecture: str = "tiny",
) -> Path:
    """Export a contract-conforming SavedModel to ``path`` (a version folder) and return it.

    ``warmup_requests`` > 0 also writes ``assets.extra/tf_serving_warmup_requests`` with that many
    Predict requests for ``model_name``. ``architecture`` is ``tiny`` (dense softmax) or ``cnn``.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if architecture == "cnn":
        model = mnist_cnn(input_shape, num_classes)
    else:
        model = _tiny_network(input_shape, num_classes)
    names = list(class_names or [str(i) for i in range(num_classes)])
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")

    archive = keras.export.ExportArchive()
    archive.track(model)
    names_const = tf.constant([names], dtype=tf.string)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = model(tf.cast(images, tf.float32), training=False)
        classes = tf.tile(names_const, [tf.shape(images)[0], 1])
        return {contract.SCORES_KEY: scores, contract.CLASSES_KEY: classes}

    spec = tf.TensorSpec([None, *input_shape], tf.uint8, name=contract.INPUT_KEY)
    archive.add_endpoint(name=contract.SIGNATURE_NAME, fn=serve, input_signature=[spec])
    path = Path(path)
    archive.write_out(str(path), verbose=False)

    extra = path / contract.ASSETS_EXTRA_DIR
    extra.mkdir(parents=True, exist_ok=True)
    metadata = {
        "model": model_name,
        "architecture": architecture,
        "input_shape": list(input_shape),
        "classes": names,
        "seed": seed,
    }
    (path / contract.METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    if warmup_requests:
        write_warmup_file(path / contract.WARMUP_FILE, model_name, input_shape, warmup_requests)
    return path


def sample_images(input_shape: Sequence[int], batch: int, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 images of shape ``[batch, *input_shape]``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, *input_shape), dtype=np.uint8)


def write_warmup_file(
    path: Path,
    model_name: str,
    input_shape: Sequence[int],
    count: int,
    batch: int = 1,
    input_key: str = contract.INPUT_KEY,
) -> None:
    """Write TF Serving's warmup format: a TFRecord file of ``PredictionLog`` protos."""
    from training.warmup import warmup_record, write_warmup_records

    records = (
        warmup_record(model_name, sample_images(input_shape, batch, seed=i), input_key)
        for i in range(count)
    )
    write_warmup_records(path, records)
