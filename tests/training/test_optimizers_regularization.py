"""Every optimizer and every regularizer of the job spec takes effect."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from fdl.jobspec import JobSpec, OptimizerSpec, RegularizationSpec
from training.models import build_model
from training.optimizers import make_optimizer
from training.trainer import compile_model

NAMES = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adadelta"]
RNG = np.random.default_rng(0)
X = RNG.random((32, 28, 28, 1), dtype=np.float32)
Y = RNG.integers(0, 10, 32)


def trained_weights(spec: JobSpec, steps: int = 3) -> list[np.ndarray]:
    keras.utils.set_random_seed(0)
    model = build_model(spec.model, (28, 28, 1), 10, spec.regularization)
    compile_model(model, spec)
    for _ in range(steps):
        model.train_on_batch(X, Y)
    return model.get_weights()


@pytest.fixture(scope="module")
def updates() -> dict[str, list[np.ndarray]]:
    keras.utils.set_random_seed(0)
    start = build_model("mnist_mlp", (28, 28, 1), 10, RegularizationSpec()).get_weights()
    out = {}
    for name in NAMES:
        spec = JobSpec(model="mnist_mlp", optimizer={"name": name, "learning_rate": 0.05})
        out[name] = [w - s for w, s in zip(trained_weights(spec), start, strict=True)]
    return out


def test_every_optimizer_moves_the_weights_its_own_way(updates) -> None:
    for name, delta in updates.items():
        assert max(np.abs(d).max() for d in delta) > 1e-4, name
    for a, b in itertools.combinations(NAMES, 2):
        close = all(
            np.allclose(x, y, atol=1e-7) for x, y in zip(updates[a], updates[b], strict=True)
        )
        assert not close, f"{a} and {b} made the same update"


def test_optimizer_hyperparameters_are_passed() -> None:
    opt = make_optimizer(OptimizerSpec(name="nesterov", learning_rate=0.3, momentum=0.7))
    assert opt.nesterov and opt.momentum == pytest.approx(0.7)
    assert float(opt.learning_rate) == pytest.approx(0.3)
    adam = make_optimizer(OptimizerSpec(name="adam", beta_1=0.8, beta_2=0.99))
    assert (adam.beta_1, adam.beta_2) == (0.8, 0.99)
    assert make_optimizer(OptimizerSpec(name="adadelta", rho=0.5)).rho == 0.5


@pytest.mark.parametrize(("l1", "l2"), [(0.01, 0.0), (0.0, 0.01), (0.003, 0.02)])
def test_l1_l2_penalties_are_added_to_the_loss(l1: float, l2: float) -> None:
    model = build_model("mnist_mlp", (28, 28, 1), 10, RegularizationSpec(l1=l1, l2=l2))
    kernels = [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]
    expected = sum(l1 * np.abs(k).sum() + l2 * np.square(k).sum() for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-4)
    plain = build_model("mnist_mlp", (28, 28, 1), 10, RegularizationSpec())
    assert not plain.losses


def unit_norms(weights: list[np.ndarray], ndim: int) -> np.ndarray:
    """The norm of each unit's incoming weights in every kernel of rank ``ndim``: a Dense
    kernel's columns, a Conv2D filter's whole (rows, cols, input channels) kernel."""
    kernels = [w.reshape(-1, w.shape[-1]) for w in weights if w.ndim == ndim]
    assert kernels
    return np.concatenate([np.linalg.norm(k, axis=0) for k in kernels])


@pytest.mark.parametrize("model", ["mnist_mlp", "mnist_cnn"])
def test_max_norm_caps_every_kernel_column(model: str) -> None:
    """Per unit: before, a Conv2D kernel (5, 5, in, filters) was capped per 5-weight column of
    each filter (Keras' default axis 0), and filters' norms reached 1.1-1.7 under max_norm 0.5."""
    base = {"model": model, "optimizer": {"name": "sgd", "learning_rate": 5.0}}
    capped = trained_weights(JobSpec(**base, regularization={"max_norm": 0.5}))
    free = trained_weights(JobSpec(**base))
    for ndim in (2, 4) if model == "mnist_cnn" else (2,):
        assert unit_norms(capped, ndim).max() <= 0.5 + 1e-5, ndim
        assert unit_norms(free, ndim).max() > 0.5, ndim


def test_dropout_defaults_and_overrides() -> None:
    def rates(model: keras.Model) -> list[float]:
        return [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]

    assert rates(build_model("mnist_cnn", (28, 28, 1), 10, RegularizationSpec())) == [0.5]
    assert rates(build_model("mnist_mlp", (28, 28, 1), 10, RegularizationSpec())) == []
    mlp = build_model("mnist_mlp", (28, 28, 1), 10, RegularizationSpec(dropout=0.3))
    assert rates(mlp) == [0.3, 0.3]
    assert rates(build_model("cifar10_cnn", (24, 24, 3), 10, RegularizationSpec(dropout=0))) == []
    train_out = mlp(X[:4], training=True).numpy()
    np.testing.assert_array_equal(mlp(X[:4]).numpy(), mlp(X[:4]).numpy())
    assert not np.allclose(train_out, mlp(X[:4]).numpy())


def test_logits_are_linear_not_relu() -> None:
    for key, shape in (("mnist_mlp", (28, 28, 1)), ("cifar10_cnn_bn", (24, 24, 3))):
        model = build_model(key, shape, 10, RegularizationSpec())
        assert model.layers[-1].activation is keras.activations.linear
        out = model(np.random.default_rng(1).normal(size=(8, *shape)).astype("float32"))
        assert (out.numpy() < 0).any()
