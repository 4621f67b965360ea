"""Job specs whose values training could not use are refused when validated, with a message
that says why; early stopping on a dataset too small to leave validation examples, which only
the run can know, fails the job before it trains. Before, a learning rate of 1e-50 (0 in
float32) trained nothing and published, and early stopping with no validation examples was
silently dropped (the run trained to its last epoch, without the best-weights restore).

Real Redis, real TensorFlow, real files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from fdl.jobs import JobStore
from fdl.jobspec import JobSpec
from fdl.jobspec_precision import DROPOUT_MAX, float32
from tests.training.spec_runs import run_spec, settings_for
from tests.training.stores import store_on_db
from tests.training.test_lost_run_finish import png

DB = 10


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


@pytest.mark.parametrize(
    ("fields", "loc", "says"),
    [
        ({"optimizer": {"learning_rate": 1e-50}}, ("optimizer", "learning_rate"), "as 0 in"),
        ({"optimizer": {"learning_rate": 1e-40}}, ("optimizer", "learning_rate"), "subnormal"),
        ({"optimizer": {"epsilon": 1e-46}}, ("optimizer", "epsilon"), "divide 0 by 0"),
        ({"optimizer": {"beta_1": 0.99999999}}, ("optimizer", "beta_1"), "rounds to 1"),
        ({"optimizer": {"beta_2": 1 - 1e-9}}, ("optimizer", "beta_2"), "steps would be 0"),
        ({"optimizer": {"rho": 0.99999999}}, ("optimizer", "rho"), "never move"),
        (
            {"optimizer": {"name": "momentum", "momentum": 0.99999999}},
            ("optimizer", "momentum"),
            "never decay",
        ),
        ({"regularization": {"max_norm": 1e-45}}, ("regularization", "max_norm"), "clipped"),
        ({"regularization": {"dropout": 0.9985}}, ("regularization", "dropout"), "bfloat16"),
        # bfloat16 rounds it to 255/256, above any of its random numbers (127/128 at most).
        ({"regularization": {"dropout": 0.9942}}, ("regularization", "dropout"), "every unit"),
        # The fast recipe's own optimizer, given a rate of its own, is checked the same way.
        (
            {"model": "cifar10_airnet", "optimizer": {"learning_rate": 1e-50}},
            ("optimizer", "learning_rate"),
            "float32",
        ),
        (
            {"early_stopping": {"patience": 2}, "max_train_examples": 4},
            ("max_train_examples",),
            "early_stopping needs validation examples, and 4 training examples leave none",
        ),
        # A batch of one has no variance: batch normalization's moving variance collapses, and
        # cifar10_cnn_bn was published answering one class (0% on the test set).
        ({"model": "cifar10_cnn_bn", "batch_size": 1}, ("batch_size",), "batch normalization"),
        ({"model": "cifar10_airnet", "batch_size": 1}, ("batch_size",), "use at least 2"),
    ],
)
def test_values_training_cannot_use_are_refused(
    fields: dict, loc: tuple[str, ...], says: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        JobSpec.model_validate({"model": "mnist_mlp", **fields})
    errors = raised.value.errors()
    assert [e["loc"] for e in errors] == [loc]
    assert says in errors[0]["msg"]


@pytest.mark.parametrize(
    "fields",
    [
        {"optimizer": {"learning_rate": 1e-30, "epsilon": 2.0**-126}},  # small, float32 holds it
        {"optimizer": {"beta_1": 0.9999999, "beta_2": 0.99999997, "rho": 0.999999}},
        {"optimizer": {"name": "nesterov", "momentum": 0.0}},
        {"regularization": {"l1": 1e-50, "l2": 1e-50, "max_norm": 1e-30, "dropout": DROPOUT_MAX}},
        {"model": "cifar10_cnn_bn", "batch_size": 2},
        {"model": "cifar10_cnn", "batch_size": 1},  # no batch normalization
        {"early_stopping": {}, "max_train_examples": 5},  # one validation example
        {"max_train_examples": 4},  # no early stopping: nothing is held out, nothing needed
    ],
)
def test_values_float32_holds_are_accepted(fields: dict) -> None:
    JobSpec.model_validate({"model": "mnist_mlp", **fields})


@pytest.mark.parametrize(
    ("optimizer", "regularization", "suggests"),
    [
        ({"learning_rate": 1e-50}, {}, "use at least "),
        ({"epsilon": 1.175e-38}, {}, "use at least "),  # 1.175e-38 < 2**-126: refused
        ({"beta_2": 1 - 1e-9}, {}, "use at most "),
        ({}, {"max_norm": 1e-40}, "use at least "),
        ({}, {"dropout": 0.995}, "use at most "),
    ],
)
def test_the_value_a_refusal_suggests_is_accepted(
    optimizer: dict, regularization: dict, suggests: str
) -> None:
    """Before, the message suggested 1.175e-38 (2**-126 rounded down), itself refused."""
    fields = {"optimizer": optimizer, "regularization": regularization}
    with pytest.raises(ValidationError) as raised:
        JobSpec.model_validate({"model": "mnist_mlp", **fields})
    message = raised.value.errors()[0]["msg"]
    suggested = float(message.split(suggests)[1])
    ((field, _),) = (optimizer or regularization).items()
    part = "optimizer" if optimizer else "regularization"
    JobSpec.model_validate({"model": "mnist_mlp", part: {field: suggested}})


def test_the_dropout_limit_is_where_bfloat16_dropout_stops_keeping_units() -> None:
    """A real Keras ``Dropout`` under ``mixed_bfloat16`` (the ``fast`` airnet's policy on CPUs
    with bfloat16): the largest rate accepted keeps units, the next float32 drops every one; so
    did the old limit's largest accepted rate (0.998)."""
    import keras
    import numpy as np
    import tensorflow as tf

    above = float(np.nextafter(np.float32(DROPOUT_MAX), np.float32(1)))
    assert float32(above) == above > DROPOUT_MAX
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"model": "mnist_mlp", "regularization": {"dropout": above}})
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        kept = {}
        for rate in (DROPOUT_MAX, above, 0.998):
            layer = keras.layers.Dropout(rate, seed=1)
            units = layer(tf.ones((256, 1024), layer.compute_dtype), training=True)
            assert units.dtype == tf.bfloat16
            kept[rate] = float(tf.reduce_mean(tf.cast(units != 0, tf.float32)))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert 0.5 / 128 < kept[DROPOUT_MAX] < 2 / 128  # 127/128 is a rate of its random numbers
    assert kept[above] == kept[0.998] == 0.0


def test_early_stopping_on_a_dataset_that_leaves_no_validation_examples_fails_the_job(
    store: JobStore, tmp_path: Path
) -> None:
    """Four training images (two classes): at most one in five is held out, so none are."""
    data_dir = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (data_dir / "four" / split / cls).mkdir(parents=True)
            for index in range(2):
                (data_dir / "four" / split / cls / f"{index}.png").write_bytes(png())
    settings = settings_for(data_dir, tmp_path)
    result, record = run_spec(
        store, "four", settings, model="mnist_logreg", dataset="four", epochs=3, batch_size=2,
        validation_split=100, early_stopping={"patience": 1}, publish_as="m",
    )  # fmt: skip
    assert result is None
    assert record["status"] == "failed"
    assert record["error"] == (
        "early_stopping needs validation examples, and none are left: validation_split holds "
        "out at most one in 5 of the 4 training examples; give the dataset at least 5 training "
        "images, or drop early_stopping"
    )
    assert not any(e["type"] == "progress" for _, e in store.read_events("four"))  # no training
    assert not (settings.model_dir / "m").exists()
