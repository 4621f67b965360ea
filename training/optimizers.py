"""Keras optimizers for the job spec's ``optimizer`` block (the book's chapter 4 set)."""

from __future__ import annotations

from typing import Any

import keras

from fdl.jobspec import OptimizerSpec


def make_optimizer(
    spec: OptimizerSpec,
    learning_rate: Any = None,
    weight_decay: float | None = None,
) -> keras.optimizers.Optimizer:
    """``learning_rate`` (a float or a schedule) replaces the spec's constant rate; a recipe's
    decoupled ``weight_decay`` applies to every optimizer."""
    lr = spec.learning_rate if learning_rate is None else learning_rate
    common: dict[str, Any] = {"weight_decay": weight_decay}
    match spec.name:
        case "sgd":
            return keras.optimizers.SGD(lr, **common)
        case "momentum":
            return keras.optimizers.SGD(lr, momentum=spec.momentum, **common)
        case "nesterov":
            return keras.optimizers.SGD(lr, momentum=spec.momentum, nesterov=True, **common)
        case "adagrad":
            return keras.optimizers.Adagrad(lr, epsilon=spec.epsilon, **common)
        case "rmsprop":
            return keras.optimizers.RMSprop(lr, rho=spec.rho, epsilon=spec.epsilon, **common)
        case "adam":
            return keras.optimizers.Adam(
                lr, beta_1=spec.beta_1, beta_2=spec.beta_2, epsilon=spec.epsilon, **common
            )
        case "adadelta":
            return keras.optimizers.Adadelta(lr, rho=spec.rho, epsilon=spec.epsilon, **common)
    raise ValueError(f"unknown optimizer {spec.name!r}")
