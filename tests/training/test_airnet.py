"""``cifar10_airnet``: the whitening convolution whitens and stays frozen, the network trains on
tiny data, and a job publishes a model that follows the contract under the Session loader with
the flip test-time augmentation inside the exported graph."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import redis
import tensorflow as tf

from fdl import contract
from fdl.jobs import JobStore
from fdl.jobspec import JobSpec
from harness.savedmodel import load_session, predict
from training.models import ARCHITECTURES, build_model, prepare_model
from training.models_airnet import PartialIdentity, whitening_kernel
from training.pipeline import eval_dataset, train_dataset
from training.preprocess import eval_preprocess
from training.trainer import compile_model


@pytest.fixture(scope="module")
def cifar(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        return exact["x_test"][:256], exact["y_test"][:256].astype(np.int64)


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/4", decode_responses=True)
    yield JobStore(client)
    client.close()


def test_whitening_kernel_whitens_two_by_two_patches(cifar) -> None:
    x = eval_preprocess(cifar[0], "cifar32").numpy()
    kernel = whitening_kernel(x, eps=1e-9)
    assert kernel.shape == (2, 2, 3, 24)
    out = tf.nn.conv2d(x, kernel, strides=1, padding="VALID").numpy().reshape(-1, 24)
    covariance = np.cov(out[:, :12], rowvar=False)
    np.testing.assert_allclose(covariance, np.eye(12), atol=1e-3)
    # Each filter and its negative, up to float32 rounding: on CPUs without AVX-512 (AMD EPYC)
    # blocks of output channels go through different kernel paths (differences of ~4e-6).
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("shape", [(3, 3, 24, 64), (3, 3, 64, 64), (3, 3, 128, 64)])
def test_partial_identity_passes_channels_through(shape) -> None:
    keras.utils.set_random_seed(3)
    kernel = keras.ops.convert_to_numpy(PartialIdentity()(shape, dtype="float32"))
    assert kernel.shape == shape
    count = min(shape[2], shape[3])
    x = np.random.default_rng(0).normal(size=(2, 9, 9, shape[2])).astype(np.float32)
    out = tf.nn.conv2d(x, kernel, strides=1, padding="SAME").numpy()
    np.testing.assert_allclose(out[..., :count], x[..., :count], atol=1e-6)
    rest = kernel[..., count:]
    if rest.size:  # He-normal: zero mean, variance 2 / fan-in
        assert abs(rest.mean()) < 0.01
        assert rest.std() == pytest.approx(np.sqrt(2 / (9 * shape[2])), rel=0.15)


def test_trains_with_the_whitening_frozen_and_averages_flips_at_inference(cifar) -> None:
    x, y = cifar
    spec = JobSpec(model="cifar10_airnet", batch_size=32, epochs=2)
    arch = ARCHITECTURES["cifar10_airnet"]
    keras.utils.set_random_seed(0)
    model = build_model(spec.model, arch.image_shape, 10, spec.regularization)
    prepare_model(spec.model, model, x)
    whiten = model.get_layer("flip_tta").net.get_layer("whiten")
    frozen = whiten.get_weights()[0].copy()
    np.testing.assert_allclose(
        frozen, whitening_kernel(eval_preprocess(x, "cifar32").numpy()), rtol=1e-5
    )
    before = [w.copy() for w in model.get_weights()]
    compile_model(model, spec, total_steps=16)
    ds = train_dataset(x, y, arch.family, 32, seed=1, augment="flip_translate")
    history = model.fit(ds, epochs=2, shuffle=False, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    np.testing.assert_array_equal(whiten.get_weights()[0], frozen)
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)]
    assert sum(changed) > len(changed) // 2

    images = eval_preprocess(x[:8], "cifar32")
    mirrored = tf.reverse(images, axis=[2])
    np.testing.assert_allclose(
        model(images, training=False), model(mirrored, training=False), rtol=1e-4, atol=1e-5
    )
    body = model.get_layer("flip_tta").net
    assert not np.allclose(body(images, training=False), body(mirrored, training=False))
    logits = model.predict(eval_dataset(x[:8], y[:8], arch.family, 8), verbose=0)
    np.testing.assert_allclose(logits, model(images, training=False), rtol=1e-4, atol=1e-5)


def test_job_publishes_a_contract_model_with_flip_tta_in_the_graph(
    store: JobStore, small_data_dir: Path, job_in_process, cifar
) -> None:
    result, record, model_dir = job_in_process(
        store, "airnet-job", small_data_dir,
        model="cifar10_airnet", dataset="tinycifar", max_train_examples=128, publish_as="air",
    )  # fmt: skip
    assert record["status"] == "succeeded", record["error"]
    assert result is not None and result["published"] and result["version"] == 1
    path = model_dir / "air" / "1"
    metadata = json.loads((path / contract.METADATA_FILE).read_text())
    assert metadata["architecture"] == "cifar10_airnet"
    assert metadata["runtime"]["recipe"] == "fast"
    assert metadata["runtime"]["augmentation"] == "flip_translate"
    assert metadata["spec"]["optimizer"]["name"] == "nesterov"

    session, signature = load_session(path)
    assert signature.method_name == contract.PREDICT_METHOD_NAME
    assert [d.size for d in signature.inputs[contract.INPUT_KEY].tensor_shape.dim] == [
        -1,
        32,
        32,
        3,
    ]
    assert signature.inputs[contract.INPUT_KEY].dtype == tf.uint8.as_datatype_enum
    images = cifar[0][:16]
    with session:
        scores, classes = predict(session, signature, images)
        flipped, _ = predict(session, signature, images[:, :, ::-1, :].copy())
    assert scores.shape == (16, 10) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert [c.decode() for c in classes[0]] == metadata["class_names"]
    # The served model averages an image with its mirror: both give the same scores and class.
    np.testing.assert_allclose(flipped, scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(flipped.argmax(axis=1), scores.argmax(axis=1))
