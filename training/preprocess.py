"""Image preprocessing shared by training-time evaluation and the exported serving graph.

``eval_preprocess`` is the one function both paths call, so a served model sees exactly what the
model saw during evaluation. ``augment_one`` is the CIFAR training augmentation of the book's
chapter 5 (random 24x24 crop, left-right flip, brightness +-63, contrast 0.2-1.8, per-image
standardization), written with stateless ops so that a seed makes it reproducible.
"""

from __future__ import annotations

import tensorflow as tf

CROP = 24
# CIFAR-10's training-set channel mean and standard deviation, in pixel units ("cifar32").
CIFAR_MEAN = (125.31, 122.95, 113.87)
CIFAR_STD = (62.99, 62.09, 66.70)


def eval_preprocess(images: tf.Tensor, family: str) -> tf.Tensor:
    """uint8 [N, H, W, C] -> float32 network input."""
    x = tf.cast(images, tf.float32)
    if family == "mnist":
        return x / 255.0
    if family == "cifar32":
        return (x - tf.constant(CIFAR_MEAN)) / tf.constant(CIFAR_STD)
    x = tf.image.resize_with_crop_or_pad(x, CROP, CROP)
    return tf.image.per_image_standardization(x)


def augment_one(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One uint8 [32, 32, 3] image and an int64 random value -> an augmented float32 crop."""
    seeds = tf.random.experimental.stateless_split(tf.stack([seed, tf.constant(0, tf.int64)]), 4)
    x = tf.cast(image, tf.float32)
    x = tf.image.stateless_random_crop(x, [CROP, CROP, int(image.shape[-1])], seed=seeds[0])
    x = tf.image.stateless_random_flip_left_right(x, seed=seeds[1])
    x = tf.image.stateless_random_brightness(x, max_delta=63.0, seed=seeds[2])
    x = tf.image.stateless_random_contrast(x, lower=0.2, upper=1.8, seed=seeds[3])
    return tf.image.per_image_standardization(x)


def network_input_shape(image_shape: tuple[int, int, int], family: str) -> tuple[int, int, int]:
    if family in ("mnist", "cifar32"):
        return image_shape
    return (CROP, CROP, image_shape[2])
