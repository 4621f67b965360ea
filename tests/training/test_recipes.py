"""Training recipes: the spec fills a recipe's defaults, the schedules have their shape, label
smoothing is the loss a job trains with, and the batched augmentations are seeded and correct."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from pydantic import ValidationError

from fdl.jobspec import JobSpec
from training.batch_augment import book_batch, flip_translate_batch
from training.models import ARCHITECTURES, build_model
from training.pipeline import train_dataset
from training.preprocess import eval_preprocess, network_input_shape
from training.recipes import (
    FAST,
    FAST_AIRNET,
    FAST_BN,
    SmoothedSparseCrossentropy,
    augmentation,
    flip_tta,
    learning_rate,
    recipe_for,
    regularization_for,
)
from training.trainer import compile_model, precision_policy


@pytest.fixture(scope="module")
def cifar_images(data_dir: Path) -> np.ndarray:
    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        return exact["x_test"][:16]


def test_book_stays_the_default_and_fast_fills_only_unset_fields() -> None:
    book = JobSpec(model="cifar10_cnn_bn")
    assert book.recipe == "book" and book.batch_size == 128
    assert book.optimizer.name == "adam" and book.optimizer.learning_rate == 0.001
    fast = JobSpec(model="cifar10_cnn_bn", recipe="fast")
    assert (fast.batch_size, fast.optimizer.name, fast.optimizer.learning_rate) == (
        256,
        "adam",
        0.004,  # the BatchNorm net's own rate; the book's other nets get 0.002
    )
    plain = JobSpec(model="cifar10_cnn", recipe="fast")
    assert (plain.batch_size, plain.optimizer.learning_rate) == (256, 0.002)
    mine = JobSpec(model="cifar10_cnn", recipe="fast", batch_size=64, optimizer={"name": "sgd"})
    assert mine.batch_size == 64 and mine.optimizer.name == "sgd"
    assert mine.optimizer.learning_rate == 0.001  # another optimizer takes none of the recipe's
    rate_only = JobSpec(model="cifar10_airnet", optimizer={"learning_rate": 0.4})
    assert rate_only.optimizer.model_dump(include={"name", "learning_rate", "momentum"}) == {
        "name": "nesterov",  # the recipe's optimizer, at the rate given
        "learning_rate": 0.4,
        "momentum": 0.9,
    }
    same = JobSpec(model="cifar10_airnet", optimizer={"name": "nesterov", "momentum": 0.8})
    assert (same.optimizer.learning_rate, same.optimizer.momentum) == (0.8, 0.8)
    air = JobSpec(model="cifar10_airnet")
    assert air.recipe == "fast" and air.batch_size == 512 and air.augment is True
    assert air.optimizer.name == "nesterov" and air.optimizer.learning_rate == 0.8
    # The worker re-validates the stored spec: the resolved values survive the round trip.
    stored = JobSpec.model_validate(fast.model_dump(mode="json"))
    assert stored == fast
    with pytest.raises(ValidationError, match="recipe"):
        JobSpec(model="cifar10_cnn", recipe="slow")


def test_recipe_parts_per_model() -> None:
    assert recipe_for(JobSpec(model="cifar10_cnn")).schedule == "constant"
    assert recipe_for(JobSpec(model="cifar10_cnn", recipe="fast")) is FAST
    assert recipe_for(JobSpec(model="cifar10_airnet")) is FAST_AIRNET
    assert augmentation(JobSpec(model="cifar10_cnn"), "cifar") == "book"
    assert augmentation(JobSpec(model="cifar10_cnn", recipe="fast"), "cifar") == "book_batched"
    assert augmentation(JobSpec(model="cifar10_airnet"), "cifar32") == "flip_translate"
    assert augmentation(JobSpec(model="cifar10_airnet", augment=False), "cifar32") == "none"
    assert regularization_for(JobSpec(model="cifar10_cnn", recipe="fast")).dropout == FAST.dropout
    bn = JobSpec(model="cifar10_cnn_bn", recipe="fast")
    assert recipe_for(bn) is FAST_BN and regularization_for(bn).dropout == 0.0
    explicit = JobSpec(model="cifar10_cnn", recipe="fast", regularization={"dropout": 0.4})
    assert regularization_for(explicit).dropout == 0.4
    assert regularization_for(JobSpec(model="cifar10_cnn")).dropout is None  # the book's 0.5


def test_fast_averages_flips_at_inference_for_cifar_nets_only(cifar_images) -> None:
    assert flip_tta(JobSpec(model="cifar10_cnn_bn", recipe="fast"))
    assert flip_tta(JobSpec(model="cifar10_airnet"))
    assert not flip_tta(JobSpec(model="cifar10_cnn_bn"))  # the book's recipe stays the book's
    assert not flip_tta(JobSpec(model="mnist_cnn", recipe="fast"))  # a mirrored digit is not one
    spec = JobSpec(model="cifar10_cnn_bn", recipe="fast")
    arch = ARCHITECTURES[spec.model]
    shape = network_input_shape(arch.image_shape, arch.family)
    keras.utils.set_random_seed(0)
    model = build_model(spec.model, shape, 10, regularization_for(spec), flip_tta=flip_tta(spec))
    images = eval_preprocess(cifar_images[:8], arch.family)
    mirrored = tf.reverse(images, axis=[2])
    np.testing.assert_allclose(
        model(images, training=False), model(mirrored, training=False), rtol=1e-4, atol=1e-5
    )
    body = model.get_layer("flip_tta").net
    assert body.name == "cifar10_cnn_bn" and model.name == "cifar10_cnn_bn"
    assert not np.allclose(body(images, training=False), body(mirrored, training=False))


def _rates(schedule, steps: int) -> np.ndarray:
    return np.array([float(schedule(step)) for step in range(steps + 1)])


def test_warmup_cosine_rises_to_the_peak_then_decays_to_zero() -> None:
    rates = _rates(learning_rate(FAST, 0.002, 100), 100)
    assert rates[0] == pytest.approx(0.0002)  # start_fraction 0.1
    assert rates[10] == pytest.approx(0.002)  # 10% warm-up reaches the peak
    assert np.all(np.diff(rates[:11]) > 0) and np.all(np.diff(rates[10:]) < 0)
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)
    assert rates[55] == pytest.approx(0.001, rel=1e-3)  # cosine: half-way down at mid-decay


def test_triangular_is_linear_up_and_down() -> None:
    rates = _rates(learning_rate(FAST_AIRNET, 0.2, 100), 120)
    assert rates[0] == pytest.approx(0.02) and rates[25] == pytest.approx(0.2)
    np.testing.assert_allclose(np.diff(rates[:26]), (0.2 - 0.02) / 25, rtol=1e-4)
    np.testing.assert_allclose(np.diff(rates[25:101]), -0.2 / 75, rtol=1e-4)
    assert rates[100] == pytest.approx(0.0, abs=1e-7) and rates[120] == pytest.approx(0.0, abs=1e-7)


def test_label_smoothing_loss_is_the_smoothed_cross_entropy() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], np.float32)
    labels = np.array([0, 2])
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    target = np.full((2, 3), 0.2 / 3)
    target[np.arange(2), labels] += 0.8
    expected = -(target * log_p).sum(axis=1).mean()
    loss = SmoothedSparseCrossentropy(0.2)(labels, logits)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(SmoothedSparseCrossentropy(0.0)(labels, logits)) == pytest.approx(float(plain))


@pytest.mark.parametrize(
    ("spec", "smoothing", "optimizer", "ema"),
    [
        (JobSpec(model="cifar10_cnn"), None, "Adam", False),
        (JobSpec(model="cifar10_cnn", recipe="fast"), 0.1, "Adam", False),
        (JobSpec(model="cifar10_airnet"), 0.2, "SGD", False),
    ],
)
def test_compile_wires_the_recipe_into_the_model(spec, smoothing, optimizer, ema) -> None:
    arch = ARCHITECTURES[spec.model]
    model = build_model(
        spec.model, network_input_shape(arch.image_shape, arch.family), 10, spec.regularization
    )
    compile_model(model, spec, total_steps=40)
    assert getattr(model.loss, "smoothing", None) == smoothing
    assert type(model.optimizer).__name__ == optimizer and model.optimizer.use_ema is ema
    if spec.recipe == "fast":
        assert model.optimizer.weight_decay == recipe_for(spec).weight_decay
        assert float(model.optimizer.learning_rate) < spec.optimizer.learning_rate  # warming up
    else:
        assert float(model.optimizer.learning_rate) == pytest.approx(spec.optimizer.learning_rate)


def test_book_batch_augmentation_is_seeded_random_and_standardized(cifar_images) -> None:
    x = tf.constant(cifar_images)
    a = book_batch(x, tf.constant([1, 2], tf.int64)).numpy()
    b = book_batch(x, tf.constant([1, 2], tf.int64)).numpy()
    c = book_batch(x, tf.constant([1, 3], tf.int64)).numpy()
    assert a.shape == (16, 24, 24, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(a.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    centre = eval_preprocess(x, "cifar").numpy()
    assert sum(np.allclose(a[i], centre[i], atol=1e-3) for i in range(16)) < 16


def test_flip_translate_moves_each_image_by_at_most_two_pixels(cifar_images) -> None:
    x = cifar_images
    out = flip_translate_batch(tf.constant(x), tf.constant([5, 6], tf.int64)).numpy()
    assert out.shape == (16, 32, 32, 3)
    pixels = np.rint(out * np.array([62.99, 62.09, 66.70]) + [125.31, 122.95, 113.87])
    padded = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect").astype(np.float64)
    shifts = set()

    def window(i: int, dy: int, dx: int, flip: bool) -> np.ndarray:
        w = padded[i, dy : dy + 32, dx : dx + 32]
        return w[:, ::-1] if flip else w

    for i in range(16):
        found = [
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            if np.array_equal(pixels[i], window(i, dy, dx, flip))
        ]
        assert found, f"image {i} is not a flipped/translated window of the padded image"
        shifts.add(found[0])
    assert len(shifts) > 3  # the images got different translations and flips


def test_batched_pipeline_is_reproducible_and_new_each_epoch(cifar_images) -> None:
    y = np.arange(16, dtype=np.int64)
    for mode in ("book_batched", "flip_translate"):
        ds = train_dataset(cifar_images, y, "cifar", 8, seed=7, augment=mode)
        again = train_dataset(cifar_images, y, "cifar", 8, seed=7, augment=mode)

        def epoch(d: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
            batches = list(d)
            return (
                np.concatenate([b.numpy() for b, _ in batches]),
                np.concatenate([lab.numpy() for _, lab in batches]),
            )

        (e1, l1), (e2, l2) = epoch(ds), epoch(ds)
        np.testing.assert_array_equal(e1, epoch(again)[0])
        assert sorted(l1) == sorted(l2) == list(range(16)) and not np.allclose(e1, e2)


@pytest.mark.parametrize(
    ("flags", "gpus", "mixed", "asks", "policy"),
    [
        ("fpu avx512f avx512_bf16", 0, True, True, "mixed_bfloat16"),
        ("fpu amx_bf16 amx_tile", 0, True, True, "mixed_bfloat16"),
        ("fpu avx2 avx512f", 0, True, True, "float32"),  # no native bfloat16: emulated is slow
        ("fpu avx512_bf16", 0, True, False, "float32"),  # the recipe does not ask
        ("fpu avx512_bf16", 0, False, True, "float32"),  # the worker turned it off
        ("fpu avx512_bf16", 1, True, True, "mixed_float16"),
    ],
)
def test_precision_policy_follows_the_cpu_the_recipe_and_the_setting(
    flags: str, gpus: int, mixed: bool, asks: bool, policy: str, tmp_path: Path
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert precision_policy(gpus, mixed, asks, cpuinfo) == policy
    assert precision_policy(0, True, True, tmp_path / "absent") == "float32"
    assert FAST_AIRNET.cpu_bfloat16 and not FAST.cpu_bfloat16
