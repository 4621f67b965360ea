"""Keras optimizers for the job spec's ``optimizer`` block (the book's chapter 4 set)."""

from __future__ import annotations

import keras

from fdl.jobspec import OptimizerSpec


def make_optimizer(spec: OptimizerSpec) -> keras.optimizers.Optimizer:
    lr = spec.learning_rate
    match spec.name:
        case "sgd":
            return keras.optimizers.SGD(lr)
        case "momentum":
            return keras.optimizers.SGD(lr, momentum=spec.momentum)
        case "nesterov":
            return keras.optimizers.SGD(lr, momentum=spec.momentum, nesterov=True)
        case "adagrad":
            return keras.optimizers.Adagrad(lr, epsilon=spec.epsilon)
        case "rmsprop":
            return keras.optimizers.RMSprop(lr, rho=spec.rho, epsilon=spec.epsilon)
        case "adam":
            return keras.optimizers.Adam(
                lr, beta_1=spec.beta_1, beta_2=spec.beta_2, epsilon=spec.epsilon
            )
        case "adadelta":
            return keras.optimizers.Adadelta(lr, rho=spec.rho, epsilon=spec.epsilon)
    raise ValueError(f"unknown optimizer {spec.name!r}")
