"""Augmentations applied to whole uint8 batches at once (vectorised), seeded per batch.

Per-example ``map`` calls cost a Python-free but per-image graph execution each; on a CPU
machine that competes with training for the same cores. These functions draw every random
number for a batch in one call and transform the batch with a few batched ops.

``book_batch``: the book's chapter 5 augmentation (random 24x24 crop, left-right flip,
brightness +-63, contrast 0.2-1.8, per-image standardization), same distributions as
``training.preprocess.augment_one``. ``flip_translate_batch``: left-right flip and a translation
of up to 2 pixels (reflection padding), then the ``cifar32`` normalization.
"""

from __future__ import annotations

import tensorflow as tf

from training.preprocess import CROP, eval_preprocess

TRANSLATE = 2


def _crops(images: tf.Tensor, size: int, offsets: tf.Tensor) -> tf.Tensor:
    """Per-image ``size`` x ``size`` windows at ``offsets`` [N, 2] (row, column), by gathering."""
    span = tf.range(size)
    rows = offsets[:, :1] + span[tf.newaxis, :]
    cols = offsets[:, 1:] + span[tf.newaxis, :]
    images = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def _flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    n = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([n, 1, 1, 1], seed) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def book_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """uint8 [N, 32, 32, C] and a [2] int64 seed -> float32 [N, 24, 24, C]."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    n = tf.shape(images)[0]
    x = tf.cast(images, tf.float32)
    room = tf.shape(images)[1:3] - CROP + 1
    offsets = tf.random.stateless_uniform([n, 2], seeds[0], maxval=tf.int32.max, dtype=tf.int32)
    x = _crops(x, CROP, offsets % room[tf.newaxis, :])
    x = _flip(x, seeds[1])
    x = x + tf.random.stateless_uniform([n, 1, 1, 1], seeds[2], -63.0, 63.0)
    factor = tf.random.stateless_uniform([n, 1, 1, 1], seeds[3], 0.2, 1.8)
    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    x = (x - mean) * factor + mean
    return tf.image.per_image_standardization(x)


def flip_translate_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """uint8 [N, H, W, C] and a [2] int64 seed -> float32 [N, H, W, C] (``cifar32`` input)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    n = tf.shape(images)[0]
    size = images.shape[1]
    pad = [[0, 0], [TRANSLATE, TRANSLATE], [TRANSLATE, TRANSLATE], [0, 0]]
    padded = tf.pad(images, pad, mode="REFLECT")
    offsets = tf.random.stateless_uniform(
        [n, 2], seeds[0], maxval=2 * TRANSLATE + 1, dtype=tf.int32
    )
    x = _flip(_crops(padded, size, offsets), seeds[1])
    return eval_preprocess(x, "cifar32")


BATCH_AUGMENTATIONS = {"book_batched": book_batch, "flip_translate": flip_translate_batch}
