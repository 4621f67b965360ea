"""The architectures a job can train: one registry for the gateway (validation), the CLI and the
training worker (which keeps only the Keras builders, keyed by the same names).

TensorFlow-free, so that the gateway and the CLI read it without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ArchitectureName = Literal[
    "mnist_logreg", "mnist_mlp", "mnist_cnn", "cifar10_cnn", "cifar10_cnn_bn", "cifar10_airnet"
]
# The datasets the worker knows by name; any other dataset is an image folder.
BUILTIN_DATASETS = ("mnist", "cifar10")

MNIST_SHAPE = (28, 28, 1)
CIFAR10_SHAPE = (32, 32, 3)


@dataclass(frozen=True)
class Architecture:
    """One trainable architecture.

    Attributes:
        dataset: the built-in dataset it trains on unless the job names another (one of
            ``BUILTIN_DATASETS``); a built-in dataset of another shape does not fit it.
        family: its preprocessing (``training/preprocess.py``): ``mnist`` (scaled to [0, 1]),
            ``cifar`` (the book's 24x24 crop, standardised per image) or ``cifar32`` (the whole
            image, standardised by CIFAR-10's channel statistics).
        image_shape: the raw uint8 input of the exported model.
        default_dropout: the dropout rate when the job sets none.
        description: one line for people.
        batch_norm: whether it normalizes by batch statistics (BatchNormalization), which a
            batch of one image makes meaningless.
    """

    dataset: str
    family: str
    image_shape: tuple[int, int, int]
    default_dropout: float
    description: str
    batch_norm: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    "mnist_logreg": Architecture(
        "mnist", "mnist", MNIST_SHAPE, 0.0, "the book's logistic regression"
    ),
    "mnist_mlp": Architecture(
        "mnist", "mnist", MNIST_SHAPE, 0.0, "the book's two-hidden-layer network"
    ),
    "mnist_cnn": Architecture(
        "mnist", "mnist", MNIST_SHAPE, 0.5, "the book's convolutional network"
    ),
    "cifar10_cnn": Architecture(
        "cifar10", "cifar", CIFAR10_SHAPE, 0.5, "the book's CIFAR-10 network"
    ),
    "cifar10_cnn_bn": Architecture(
        "cifar10",
        "cifar",
        CIFAR10_SHAPE,
        0.5,
        "the book's CIFAR-10 network with batch normalization",
        batch_norm=True,
    ),
    "cifar10_airnet": Architecture(
        "cifar10",
        "cifar32",
        CIFAR10_SHAPE,
        0.0,
        "airbench-style network, beyond the book",
        batch_norm=True,
    ),
}

if set(get_args(ArchitectureName)) != set(ARCHITECTURES):
    raise RuntimeError("ArchitectureName and ARCHITECTURES list different architectures")
