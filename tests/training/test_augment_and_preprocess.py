"""Preprocessing is identical between training-time evaluation and the exported graph, and the
CIFAR augmentation does what chapter 5 describes, reproducibly."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from fdl.jobspec import RegularizationSpec
from harness.savedmodel import load_session, predict
from training.export import export_savedmodel
from training.models import ARCHITECTURES, build_model
from training.pipeline import eval_dataset, train_dataset
from training.preprocess import augment_one, eval_preprocess, network_input_shape


@pytest.fixture(scope="module")
def cifar_images(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        return exact["x_test"][:16], exact["y_test"][:16].astype(np.int64)


@pytest.mark.parametrize("model", ["cifar10_cnn_bn", "mnist_cnn", "cifar10_airnet"])
def test_exported_graph_equals_training_time_evaluation(
    model: str, cifar_images: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    arch = ARCHITECTURES[model]
    keras.utils.set_random_seed(3)
    net = build_model(
        model, network_input_shape(arch.image_shape, arch.family), 10, RegularizationSpec()
    )
    x, y = cifar_images
    if arch.family == "mnist":
        x = x[:, 2:30, 2:30, :1]
    logits = net.predict(eval_dataset(x, y, arch.family, 8), verbose=0)
    expected = tf.nn.softmax(logits).numpy()
    export_savedmodel(
        net, arch.family, arch.image_shape, [str(i) for i in range(10)], tmp_path / "m"
    )
    session, signature = load_session(tmp_path / "m")
    with session:
        scores, _ = predict(session, signature, x)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_eval_crop_is_central_and_standardized(cifar_images) -> None:
    x, _ = cifar_images
    out = eval_preprocess(tf.constant(x), "cifar").numpy()
    assert out.shape == (16, 24, 24, 3)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-3)
    centre = x[:, 4:28, 4:28, :].astype(np.float32)
    flat = centre.reshape(16, -1)
    manual = (flat - flat.mean(1, keepdims=True)) / np.maximum(
        flat.std(1, keepdims=True), 1 / np.sqrt(flat.shape[1])
    )
    np.testing.assert_allclose(out.reshape(16, -1), manual, rtol=1e-4, atol=1e-4)


def test_augmentation_is_random_per_image_and_reproducible(cifar_images) -> None:
    x, _ = cifar_images
    image = tf.constant(x[0])
    a = augment_one(image, tf.constant(1, tf.int64)).numpy()
    b = augment_one(image, tf.constant(1, tf.int64)).numpy()
    c = augment_one(image, tf.constant(2, tf.int64)).numpy()
    assert a.shape == (24, 24, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(a.mean(), 0, atol=1e-4)  # standardized last
    centre = eval_preprocess(tf.constant(x[:1]), "cifar").numpy()[0]
    variants = [augment_one(image, tf.constant(s, tf.int64)).numpy() for s in range(20)]
    assert sum(np.allclose(v, centre, atol=1e-3) for v in variants) < 20

    def epoch(ds: tf.data.Dataset) -> np.ndarray:
        return np.concatenate([batch.numpy() for batch, _ in ds])

    y = np.zeros(16, np.int64)
    first = train_dataset(x, y, "cifar", 8, seed=7, augment=True)
    again = train_dataset(x, y, "cifar", 8, seed=7, augment=True)
    e1, e2 = epoch(first), epoch(first)
    np.testing.assert_array_equal(e1, epoch(again))  # same seed, same stream
    assert not np.allclose(e1, e2)  # a new epoch draws new augmentations


def test_plain_pipeline_covers_every_example_once_per_epoch_in_a_seeded_order() -> None:
    x = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1).repeat(28, 1).repeat(28, 2)
    y = np.arange(50, dtype=np.int64)

    def epoch(ds: tf.data.Dataset) -> list[int]:
        return [int(v) for _, labels in ds for v in labels.numpy()]

    ds = train_dataset(x, y, "mnist", 16, seed=3, augment=False)
    assert ds.cardinality().numpy() == 4
    first, second = epoch(ds), epoch(ds)
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != second and first != list(range(50))
    assert epoch(train_dataset(x, y, "mnist", 16, seed=3, augment=False)) == first
    assert epoch(train_dataset(x, y, "mnist", 16, seed=4, augment=False)) != first
    images, labels = next(iter(ds))
    np.testing.assert_allclose(images.numpy()[:, 0, 0, 0], labels.numpy() / 255.0, rtol=1e-6)
