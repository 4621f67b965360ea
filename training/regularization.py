"""The job spec's kernel regularization as Keras layer keywords, for every architecture."""

from __future__ import annotations

from typing import Any

import keras

from fdl.jobspec import RegularizationSpec

# The axes of a kernel that hold one unit's weights: all but the last (the units'). A Dense
# kernel is (inputs, units); a Conv2D kernel is (rows, cols, input channels, filters).
DENSE_UNIT_AXES = [0]
CONV2D_UNIT_AXES = [0, 1, 2]


def kernel_kwargs(reg: RegularizationSpec, conv: bool = False) -> dict[str, Any]:
    """``kernel_regularizer`` (L1/L2) and ``kernel_constraint`` (max-norm) where the spec sets
    them, to pass to each ``Dense`` (``conv`` False) or ``Conv2D`` (``conv`` True). Max-norm caps
    the norm of each unit's incoming weights: a Dense kernel's column, a Conv2D filter's whole
    (rows, cols, input channels) kernel (Keras' default axis 0 would cap each column of each
    filter's rows apart)."""
    kw: dict[str, Any] = {}
    if reg.l1 or reg.l2:
        kw["kernel_regularizer"] = keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)
    if reg.max_norm is not None:
        axes = CONV2D_UNIT_AXES if conv else DENSE_UNIT_AXES
        kw["kernel_constraint"] = keras.constraints.MaxNorm(reg.max_norm, axis=axes)
    return kw
