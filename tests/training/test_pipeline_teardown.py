"""Training pipelines run without tf.data's autotuner, whose thread makes every iterator's
teardown (Keras tears one down after every epoch, and after every validation pass) wait for its
current sleep, which doubles while the iterator lives (training/pipeline.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from training.pipeline import eval_dataset, train_dataset

IMAGES = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
LABELS = np.arange(64, dtype=np.int64) % 10

PIPELINES = {
    "book": lambda: train_dataset(IMAGES, LABELS, "cifar", 8, 1, "book"),
    "book_batched": lambda: train_dataset(IMAGES, LABELS, "cifar", 8, 1, "book_batched"),
    "flip_translate": lambda: train_dataset(IMAGES, LABELS, "cifar32", 8, 1, "flip_translate"),
    "none": lambda: train_dataset(IMAGES, LABELS, "cifar32", 8, 1, "none"),
    "eval": lambda: eval_dataset(IMAGES, LABELS, "cifar32", 8),
}


@pytest.mark.parametrize("kind", sorted(PIPELINES))
def test_every_pipeline_has_the_autotuner_off(kind: str) -> None:
    assert PIPELINES[kind]().options().autotune.enabled is False


def test_an_iterator_that_lived_two_seconds_is_torn_down_at_once() -> None:
    # With the autotuner on, its thread sleeps 10 ms, 20 ms, ... 1.28 s (from about 1.27 s of
    # the iterator's life on), so a teardown at 2 s waits about half a second.
    iterator = iter(PIPELINES["flip_translate"]().repeat())
    lived = time.monotonic()
    while time.monotonic() - lived < 2.0:
        next(iterator)
    started = time.monotonic()
    del iterator
    assert time.monotonic() - started < 0.2
