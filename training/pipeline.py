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
    """Shuffled (seeded, a new order every epoch) training batches of network input.

    Without augmentation the pipeline shuffles *indices* once per epoch and gathers whole batches
    of uint8 pixels, preprocessing a batch at a time (vectorised, no per-example work); with
    augmentation each example gets its own random crop/flip/brightness/contrast.
    """
    if augment:
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, noise)).map(
            lambda xy, r: (augment_one(xy[0], r), xy[1]),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        return ds.batch(batch_size).prefetch(AUTOTUNE)
    images, labels = tf.constant(x), tf.constant(y)
    count = len(x)
    batches = -(-count // batch_size)

    def epoch(epoch_seed: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([epoch_seed, tf.constant(0, tf.int64)])
        )
        return tf.data.Dataset.range(batches).map(
            lambda i: order[i * batch_size : tf.minimum((i + 1) * batch_size, count)]
        )

    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    ds = seeds.flat_map(epoch).map(
        lambda idx: (eval_preprocess(tf.gather(images, idx), family), tf.gather(labels, idx)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return ds.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray, family: str, batch_size: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    ds = ds.map(
        lambda images, labels: (eval_preprocess(images, family), labels),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return ds.cache().prefetch(AUTOTUNE)
