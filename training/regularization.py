"""The job spec's kernel regularization as Keras layer keywords, for every architecture."""

from __future__ import annotations

from typing import Any

import keras

from fdl.jobspec import RegularizationSpec


def kernel_kwargs(reg: RegularizationSpec) -> dict[str, Any]:
    """``kernel_regularizer`` (L1/L2) and ``kernel_constraint`` (max-norm) where the spec sets
    them, to pass to each ``Dense`` or ``Conv2D``."""
    kw: dict[str, Any] = {}
    if reg.l1 or reg.l2:
        kw["kernel_regularizer"] = keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)
    if reg.max_norm is not None:
        kw["kernel_constraint"] = keras.constraints.MaxNorm(reg.max_norm)
    return kw
