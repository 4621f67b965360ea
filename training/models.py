"""The Keras builders of the architectures in :mod:`fdl.architectures`, keyed by the same names:
functional models that output logits (the book's, and ``cifar10_airnet`` from
:mod:`training.models_airnet`).

The book's TF1 code applies ReLU to the output layer; here the last layer is linear (logits) and
softmax is applied in the loss and in the exported graph. Hidden layers use He-normal init.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from fdl.architectures import ARCHITECTURES
from fdl.jobspec import JobSpec, RegularizationSpec
from training import tta
from training.models_airnet import airnet, prepare_whitening
from training.recipes import flip_tta, regularization_for
from training.regularization import kernel_kwargs


@dataclass(frozen=True)
class Builder:
    # (network input shape, number of classes, regularization, dropout rate) -> logits model
    build: Callable[[tuple[int, int, int], int, RegularizationSpec, float], keras.Model]
    # Sets weights computed from the uint8 training images before training (e.g. whitening).
    prepare: Callable[[keras.Model, np.ndarray], None] | None = None


def _logits(x, num_classes: int, reg: RegularizationSpec, init: str = "glorot_uniform"):
    # float32 even under a mixed-precision policy: scores stay float32.
    return keras.layers.Dense(
        num_classes, kernel_initializer=init, dtype="float32", name="logits", **kernel_kwargs(reg)
    )(x)


def logreg(shape, num_classes, reg, dropout) -> keras.Model:
    inputs = keras.Input(shape=shape, name="pixels")
    x = keras.layers.Flatten()(inputs)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    # The book initialises logistic regression with zeros; the loss is convex.
    return keras.Model(inputs, _logits(x, num_classes, reg, "zeros"), name="mnist_logreg")


def mlp(shape, num_classes, reg, dropout) -> keras.Model:
    inputs = keras.Input(shape=shape, name="pixels")
    x = keras.layers.Flatten()(inputs)
    for i in (1, 2):
        x = keras.layers.Dense(
            256,
            activation="relu",
            kernel_initializer="he_normal",
            name=f"hidden_{i}",
            **kernel_kwargs(reg),
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _logits(x, num_classes, reg), name="mnist_mlp")


def mnist_cnn(shape, num_classes, reg, dropout) -> keras.Model:
    inputs = keras.Input(shape=shape, name="pixels")
    x = inputs
    for i, filters in enumerate((32, 64), start=1):
        x = keras.layers.Conv2D(
            filters,
            5,
            padding="same",
            activation="relu",
            kernel_initializer="he_normal",
            name=f"conv_{i}",
            **kernel_kwargs(reg, conv=True),
        )(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(
        1024, activation="relu", kernel_initializer="he_normal", name="fc", **kernel_kwargs(reg)
    )(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _logits(x, num_classes, reg), name="mnist_cnn")


def _cifar(batch_norm: bool):
    def build(shape, num_classes, reg, dropout) -> keras.Model:
        inputs = keras.Input(shape=shape, name="pixels")
        x = inputs

        def block(x, layer, name):
            x = layer(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=f"{name}_bn")(
                    x
                )
            return keras.layers.Activation("relu", name=f"{name}_relu")(x)

        for i in (1, 2):
            conv = keras.layers.Conv2D(
                64,
                5,
                padding="same",
                use_bias=not batch_norm,
                kernel_initializer="he_normal",
                name=f"conv_{i}",
                **kernel_kwargs(reg, conv=True),
            )
            x = block(x, conv, f"conv_{i}")
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
        x = keras.layers.Flatten()(x)
        for units, name in ((384, "fc_1"), (192, "fc_2")):
            dense = keras.layers.Dense(
                units,
                use_bias=not batch_norm,
                kernel_initializer="he_normal",
                name=name,
                **kernel_kwargs(reg),
            )
            x = block(x, dense, name)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
        model_name = "cifar10_cnn_bn" if batch_norm else "cifar10_cnn"
        return keras.Model(inputs, _logits(x, num_classes, reg), name=model_name)

    return build


BUILDERS: dict[str, Builder] = {
    "mnist_logreg": Builder(logreg),
    "mnist_mlp": Builder(mlp),
    "mnist_cnn": Builder(mnist_cnn),
    "cifar10_cnn": Builder(_cifar(batch_norm=False)),
    "cifar10_cnn_bn": Builder(_cifar(batch_norm=True)),
    "cifar10_airnet": Builder(airnet, prepare_whitening),
}
if set(BUILDERS) != set(ARCHITECTURES):
    raise RuntimeError(f"builders and architectures differ: {set(BUILDERS) ^ set(ARCHITECTURES)}")


def build_model(
    key: str,
    net_shape: tuple[int, int, int],
    num_classes: int,
    reg: RegularizationSpec,
    flip_tta: bool = False,
) -> keras.Model:
    """The architecture's model; with ``flip_tta`` wrapped in flip test-time augmentation
    (``training.tta``) unless it has it built in (``cifar10_airnet``)."""
    dropout = ARCHITECTURES[key].default_dropout if reg.dropout is None else reg.dropout
    model = BUILDERS[key].build(net_shape, num_classes, reg, dropout)
    if flip_tta and tta.network(model) is model:
        return tta.with_flip_tta(model, model.name)
    return model


def build_job_model(
    spec: JobSpec, net_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """The model a job trains and exports: its architecture with the recipe's dropout and flip
    test-time augmentation."""
    reg = regularization_for(spec)
    return build_model(spec.model, net_shape, num_classes, reg, flip_tta=flip_tta(spec))


def prepare_model(key: str, model: keras.Model, x_train: np.ndarray) -> None:
    """Set the weights an architecture computes from its uint8 training images (airnet's
    whitening) before training; nothing for the others."""
    prepare = BUILDERS[key].prepare
    if prepare is not None:
        prepare(model, x_train)
