"""``tf.data`` input pipelines: shuffle, augment, batch, preprocess, cache, prefetch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.preprocess import augment_one, eval_preprocess

AUTOTUNE = tf.data.AUTOTUNE


def split_validation(
    x: np.ndarray, y: np.ndarray, requested: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """The first ``requested`` examples are held out (as the book's MNIST reader does), capped at
    a fifth of the training examples so that small capped runs still train."""
    count = min(requested, len(x) // 5)
    if count <= 0:
        return (x, y), None
    return (x[count:], y[count:]), (x[:count], y[:count])


def train_dataset(
    x: np.ndarray,
    y: np.ndarray,
    family: str,
    batch_size: int,
    seed: int,
    augment: bool,
) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment:
        noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, noise)).map(
            lambda xy, r: (augment_one(xy[0], r), xy[1]),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        ds = ds.batch(batch_size)
    else:
        ds = ds.batch(batch_size).map(
            lambda images, labels: (eval_preprocess(images, family), labels),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    return ds.prefetch(AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray, family: str, batch_size: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    ds = ds.map(
        lambda images, labels: (eval_preprocess(images, family), labels),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return ds.cache().prefetch(AUTOTUNE)
