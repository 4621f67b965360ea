"""``cifar10_airnet``: a small modern CIFAR-10 convnet in the spirit of airbench (Keller Jordan's
cifar10-airbench), written for Keras from its description, not its code.

- A frozen 2x2 patch-whitening first convolution: its filters are the eigenvectors of the
  covariance of 2x2 training patches, scaled by 1/sqrt(eigenvalue), each with its negative
  (``prepare_whitening``, run once on training images before training).
- Three blocks of conv 3x3 -> max-pool 2 -> BatchNorm -> ReLU -> conv 3x3 -> BatchNorm -> ReLU.
  BatchNorm learns a bias only (no scale), as in airbench. airbench uses GELU; ReLU trains 1.24-1.37
  times the images/s on two CPU cores for 0.15 points less after three epochs (docs/training.md).
- Partial-identity ("dirac") initialization of the 3x3 convolutions, as in airbench: the first
  ``min(in, out)`` filters pass their input channel through unchanged, the others are He-normal.
  +0.8 points of test accuracy after three epochs (docs/training.md).
- Global max-pool, a linear layer without bias, logits scaled down by 1/8 so that the
  label-smoothed loss starts near log(K).
- Flip test-time augmentation inside the model (``training.tta``), whatever the recipe.

The input is the full 32x32 image normalized by CIFAR-10's channel mean and standard deviation
(family ``cifar32`` in ``training.preprocess``).
"""

from __future__ import annotations

import keras
import numpy as np

from fdl.jobspec import RegularizationSpec
from training.preprocess import eval_preprocess
from training.regularization import kernel_kwargs
from training.tta import network, with_flip_tta

# Channel widths of the three blocks. airbench94 uses (64, 256, 256), too slow for the 2-core CPU
# budget. (64, 128, 256) has 3.4 times the FLOPs of (32, 64, 128) but, at these sizes, where a
# step's cost is mostly per-layer overhead, costs only about 1.8 times the time per image and
# gains more per epoch (docs/training.md, "Issue 18").
WIDTHS = (64, 128, 256)
WHITEN_PATCH = 2
WHITEN_EPS = 1e-3  # added to eigenvalues: keeps the noisiest directions from being amplified
WHITEN_IMAGES = 1024  # training images whose patches estimate the covariance
LOGIT_SCALE = 0.125
BN = {"momentum": 0.9, "epsilon": 1e-5, "scale": False}
ACTIVATION = "relu"


@keras.saving.register_keras_serializable(package="fdl")
class PartialIdentity(keras.initializers.Initializer):
    """A conv kernel ``[h, w, in, out]`` whose first ``min(in, out)`` filters are identities
    (1 at the centre tap of their own input channel) and whose other filters are He-normal."""

    def __call__(self, shape, dtype=None):
        height, width, channels_in, channels_out = shape
        count = min(channels_in, channels_out)
        identity = np.zeros((height, width, channels_in, count), dtype="float32")
        identity[height // 2, width // 2, np.arange(count), np.arange(count)] = 1.0
        rest = keras.initializers.HeNormal()(shape, dtype=dtype)[..., count:]
        return keras.ops.concatenate([keras.ops.cast(identity, rest.dtype), rest], axis=-1)


def _conv(filters: int, kw: dict, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=PartialIdentity(),
        name=name,
        **kw,
    )


def airnet(
    shape, num_classes, reg: RegularizationSpec, dropout: float, widths: tuple[int, ...] = WIDTHS
) -> keras.Model:
    kw, conv_kw = kernel_kwargs(reg), kernel_kwargs(reg, conv=True)
    inputs = keras.Input(shape=shape, name="pixels")
    channels = shape[-1] * WHITEN_PATCH * WHITEN_PATCH
    x = keras.layers.Conv2D(
        2 * channels, WHITEN_PATCH, use_bias=False, trainable=False, name="whiten"
    )(inputs)
    x = keras.layers.BatchNormalization(name="whiten_bn", **BN)(x)
    x = keras.layers.Activation(ACTIVATION, name="whiten_act")(x)
    for i, width in enumerate(widths, start=1):
        x = _conv(width, conv_kw, f"block{i}_conv1")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn1", **BN)(x)
        x = keras.layers.Activation(ACTIVATION, name=f"block{i}_act1")(x)
        x = _conv(width, conv_kw, f"block{i}_conv2")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn2", **BN)(x)
        x = keras.layers.Activation(ACTIVATION, name=f"block{i}_act2")(x)
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, dtype="float32", name="logits", **kw)(x)
    logits = keras.layers.Rescaling(LOGIT_SCALE, dtype="float32", name="logit_scale")(x)
    return with_flip_tta(keras.Model(inputs, logits, name="airnet_body"), "cifar10_airnet")


def whitening_kernel(images: np.ndarray, eps: float = WHITEN_EPS) -> np.ndarray:
    """[N, H, W, C] float network input -> the whitening conv kernel [p, p, C, 2*p*p*C]."""
    p = WHITEN_PATCH
    c = images.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(images, (p, p), axis=(1, 2))
    # [N, H-p+1, W-p+1, C, p, p] -> patches flattened in the kernel's (row, col, channel) order.
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, p * p * c).astype(np.float64)
    patches -= patches.mean(axis=0)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    filters = eigenvectors / np.sqrt(eigenvalues + eps)
    filters = np.concatenate([filters, -filters], axis=1)
    return filters.reshape(p, p, c, 2 * p * p * c).astype(np.float32)


def prepare_whitening(model: keras.Model, images: np.ndarray) -> None:
    """Sets the frozen first convolution from the first uint8 training images."""
    network_input = np.asarray(eval_preprocess(images[:WHITEN_IMAGES], "cifar32"))
    network(model).get_layer("whiten").set_weights([whitening_kernel(network_input)])
