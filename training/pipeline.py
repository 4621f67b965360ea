"""``tf.data`` input pipelines: shuffle, augment, batch, preprocess, cache, prefetch.

Every pipeline runs with tf.data's autotuner off and fixed parallelism. With it on, destroying
an iterator (Keras does at the end of every epoch, for training and for validation) waits for the
autotuner's thread to wake from its current sleep, which doubles up to a minute as the iterator
lives: measured on two cores, training stalled with every core idle for 10-16 s after each
25 s of steps, and a 140 s epoch lost ~50 s (docs/training.md, "Data").
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from fdl.jobspec import VALIDATION_ONE_IN
from training.batch_augment import BATCH_AUGMENTATIONS
from training.preprocess import augment_one, eval_preprocess

# Parallel map calls: one per core this process may run on (cpusets and container limits that
# pin cores are respected; a CPU quota is not visible here and only costs some idle threads).
PARALLEL_CALLS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
PREFETCH_BATCHES = 2


def _without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def split_validation(
    x: np.ndarray, y: np.ndarray, requested: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """The first ``requested`` examples are held out (as the book's MNIST reader does), capped at
    a fifth of the training examples so that small capped runs still train."""
    count = min(requested, len(x) // VALIDATION_ONE_IN)
    if count <= 0:
        return (x, y), None
    return (x[count:], y[count:]), (x[:count], y[:count])


def train_dataset(
    x: np.ndarray,
    y: np.ndarray,
    family: str,
    batch_size: int,
    seed: int,
    augment: bool | str,
) -> tf.data.Dataset:
    """Shuffled (seeded, a new order every epoch) training batches of network input.

    ``augment``: False or "none", True or "book" (the book's per-example augmentation), or one
    of ``training.batch_augment.BATCH_AUGMENTATIONS`` ("book_batched", "flip_translate").
    The pipeline shuffles *indices* once per epoch and gathers whole batches of uint8 pixels,
    preprocessing (or augmenting, seeded by epoch and batch) a batch at a time, with no
    per-example work; "book" instead gives each example its own map call.
    """
    mode = {True: "book", False: "none"}.get(augment, augment)  # type: ignore[call-overload]
    if mode == "book":
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, noise)).map(
            lambda xy, r: (augment_one(xy[0], r), xy[1]),
            num_parallel_calls=PARALLEL_CALLS,
            deterministic=True,
        )
        return _without_autotune(ds.batch(batch_size).prefetch(PREFETCH_BATCHES))
    images, labels = tf.constant(x), tf.constant(y)
    count = len(x)
    batches = -(-count // batch_size)

    def epoch(epoch_seed: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([epoch_seed, tf.constant(0, tf.int64)])
        )
        return tf.data.Dataset.range(batches).map(
            lambda i: (
                order[i * batch_size : tf.minimum((i + 1) * batch_size, count)],
                tf.stack([epoch_seed, i + 1]),
            )
        )

    if mode == "none":
        transform = lambda pixels, _: eval_preprocess(pixels, family)  # noqa: E731
    else:
        transform = BATCH_AUGMENTATIONS[mode]
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    ds = seeds.flat_map(epoch).map(
        lambda idx, batch_seed: (
            transform(tf.gather(images, idx), batch_seed),
            tf.gather(labels, idx),
        ),
        num_parallel_calls=PARALLEL_CALLS,
        deterministic=True,
    )
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return _without_autotune(ds.prefetch(PREFETCH_BATCHES))


def eval_dataset(x: np.ndarray, y: np.ndarray, family: str, batch_size: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    ds = ds.map(
        lambda images, labels: (eval_preprocess(images, family), labels),
        num_parallel_calls=PARALLEL_CALLS,
        deterministic=True,
    )
    return _without_autotune(ds.cache().prefetch(PREFETCH_BATCHES))
