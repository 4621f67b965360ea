"""Export a trained network as a SavedModel that follows :mod:`fdl.contract`.

The serving graph takes raw uint8 pixels, applies :func:`training.preprocess.eval_preprocess`
(the same function evaluation used during training), runs the network and returns softmax
``scores`` (float32) and the aligned ``classes`` (string).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from fdl import contract
from training.preprocess import eval_preprocess

assert contract.INPUT_KEY == "images"  # the serving function's argument name below


def float32_copy(model: keras.Model, rebuild) -> keras.Model:
    """A plain float32, strategy-free copy of ``model`` (for mixed-precision / mirrored runs)."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = rebuild()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def export_savedmodel(
    model: keras.Model,
    family: str,
    image_shape: tuple[int, int, int],
    class_names: Sequence[str],
    path: Path,
) -> Path:
    classes = tf.constant(list(class_names), dtype=tf.string)
    archive = keras.export.ExportArchive()
    archive.track(model)

    @tf.function(
        input_signature=[tf.TensorSpec([None, *image_shape], tf.uint8, name=contract.INPUT_KEY)]
    )
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = model(eval_preprocess(images, family), training=False)
        scores = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        batch = tf.shape(images)[0]
        return {
            contract.SCORES_KEY: scores,
            contract.CLASSES_KEY: tf.tile(classes[tf.newaxis, :], [batch, 1]),
        }

    archive.add_endpoint(contract.SIGNATURE_NAME, serve)
    archive.write_out(str(path), verbose=False)
    return path
