"""Digit accuracy through the gateway on real-world-looking images vs raw MNIST tensors.

Trains a small Keras CNN on the real MNIST training set (seeded), exports it per fdl.contract,
serves it with the model server behind the gateway, and measures on MNIST test digits:
  raw      the 28x28 test tensors sent straight to the model server (direct gRPC Predict)
  photo    each digit rendered as a JPEG photo of paper (bench/gateway_render.py), via HTTP
  drawing  each digit as dark strokes on a transparent PNG canvas, via HTTP
Goal (issue 5): photo and drawing accuracy within 2 points of raw.

    python bench/gateway_digits.py [--count 1000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
from pathlib import Path

import numpy as np
from gateway_calls import grpc_accuracy, http_accuracy
from gateway_render import photo_of_paper, transparent_drawing
from gateway_stack import REPO_ROOT, running_stack

from fdl import contract


def load_idx(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(folder / f"{split}-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images, labels


def train_and_export(data_dir: Path, out: Path, epochs: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    x, y = load_idx(data_dir / "mnist", "train")
    inputs = keras.Input(shape=(28, 28, 1))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(32, 5, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(64, 5, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(128, activation="relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[..., None], y, batch_size=128, epochs=epochs, verbose=2)
    names = tf.constant([[str(i) for i in range(10)]])
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = model(tf.cast(images, tf.float32), training=False)
        classes = tf.tile(names, [tf.shape(images)[0], 1])
        return {contract.SCORES_KEY: scores, contract.CLASSES_KEY: classes}

    spec = tf.TensorSpec([None, 28, 28, 1], tf.uint8, name=contract.INPUT_KEY)
    archive.add_endpoint(name=contract.SIGNATURE_NAME, fn=serve, input_signature=[spec])
    archive.write_out(str(out), verbose=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    images, labels = load_idx(args.data_dir / "mnist", "t10k")
    images, labels = images[: args.count], labels[: args.count]
    rng = np.random.default_rng(0)
    photos = [photo_of_paper(d, rng) for d in images]
    drawings = [transparent_drawing(d, rng) for d in images]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_and_export(args.data_dir, work / "models" / "digits" / "1", args.epochs)
        with running_stack(work / "models", work, {"digits": 1}) as stack:
            raw = grpc_accuracy(stack.grpc_target, "digits", images[..., None], labels, 250, 60)
            photo = http_accuracy(stack.url, "digits", photos, labels, "jpg", 32, 120)
            drawing = http_accuracy(stack.url, "digits", drawings, labels, "png", 32, 120)
    print(f"MNIST test digits: {args.count}; CNN trained {args.epochs} epoch(s)")
    print(f"  raw tensors (direct gRPC):        {raw:.2%}")
    print(f"  photos of paper (HTTP, JPEG):     {photo:.2%}  ({(photo - raw) * 100:+.1f} points)")
    print(
        f"  transparent drawings (HTTP, PNG): {drawing:.2%}  ({(drawing - raw) * 100:+.1f} points)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
