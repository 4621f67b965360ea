"""Forgets the gradients a run registered in TensorFlow's process-global gradient registry.

Keras's TensorFlow optimizer sums gradients through the distribution strategy's replica context
(``ReplicaContext.all_reduce``), a ``tf.custom_gradient``. Traced in graph mode (``model.fit``
traces its training step), each one registers ``CustomGradient-<n>`` in the process-global
registry, which nothing ever empties (TensorFlow issue #97697; ``keras.backend.clear_session``
does not either), and its closure holds the whole traced step: a worker's pool process, which
runs job after job, grew by about 5 MB a job. Only tracing looks these names up, and a run's
tracing is over when it ends; a later trace registers its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tensorflow.python.framework import ops as tf_ops

log = logging.getLogger(__name__)
PREFIX = "CustomGradient-"


def _entries() -> dict[str, Any] | None:
    """TensorFlow's registry (private: a TensorFlow that renames it leaves runs as they were,
    with one warning, rather than failing them; tests/training/test_traced_steps_released.py
    then fails)."""
    entries = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    if isinstance(entries, dict):
        return entries
    if not getattr(_entries, "warned", False):
        _entries.warned = True  # type: ignore[attr-defined]
        log.warning(
            "this TensorFlow has no gradient registry where it used to be: each run's traced "
            "training step stays in memory (a worker's pool process grows job after job)"
        )
    return None


def custom_gradients() -> set[str]:
    """The names ``tf.custom_gradient`` registered in graph mode so far."""
    entries = _entries()
    return {name for name in list(entries or ()) if name.startswith(PREFIX)}


@contextmanager
def forgotten_at_end() -> Iterator[None]:
    """Within it one run traces and trains; at its end, the custom gradients registered
    meanwhile are dropped (runs in one process are sequential: a job at a time)."""
    before = custom_gradients()
    try:
        yield
    finally:
        entries = _entries()
        for name in custom_gradients() - before:
            if entries is not None:
                entries.pop(name, None)
