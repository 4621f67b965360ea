"""Job-spec values that the precision training computes in would make meaningless.

Training computes the optimizer's arithmetic in float32 and, with mixed precision, the layers in
bfloat16 or float16: a hyper-parameter that rounds to 0 or 1 there, or a dropout rate that drops
every unit, is refused by fdl/jobspec.py's models with these validators (422 naming the field).
"""

from __future__ import annotations

import struct

from pydantic import ValidationInfo

# Training computes the optimizer's arithmetic in float32 (mixed precision too), and TensorFlow
# flushes subnormal floats to zero: a value below the smallest normal float32 counts as 0 there.
FLOAT32_TINY = 2.0**-126
# Mixed precision computes the layers, dropout among them, in bfloat16 (8 significant bits) or
# float16. A unit is kept where a random number is at least the rate, both in that precision,
# and TensorFlow's bfloat16 random numbers go up to 127/128 only: a rate that bfloat16 rounds
# above that (anything above this midpoint of 127/128 and 255/256) drops every unit.
DROPOUT_MAX = (127 / 128 + 255 / 256) / 2  # 0.994140625
# What each float hyper-parameter that float32 would make meaningless would do: one that must be
# positive once it rounds to 0, one that must stay below 1 once it rounds to 1.
_ROUNDED_TO_0 = {
    "learning_rate": "training would not change the model",
    "epsilon": "the optimizer would divide 0 by 0 (NaN)",
    "max_norm": "every kernel weight would be clipped to 0",
}
_ROUNDED_TO_1 = {
    "momentum": "the velocity would never decay",
    "beta_1": "adam would divide by 0 (NaN)",
    "beta_2": "adam's steps would be 0: training would not change the model",
    "rho": "its running averages would never move",
}


def float32(value: float) -> float:
    """``value`` as float32 holds it (rounded to the nearest)."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def at_least(value: float) -> str:
    """``value`` written short, rounded up (never below it), for a message that suggests it."""
    digits = 5
    while float(f"{value:.{digits}g}") < value:
        digits += 1
    return f"{value:.{digits}g}"


def check_float32(value: float | None, info: ValidationInfo) -> float | None:
    """A pydantic validator of a float hyper-parameter (named in ``_ROUNDED_TO_0`` or
    ``_ROUNDED_TO_1``): the value itself, or ValueError when float32 makes it meaningless."""
    field = str(info.field_name)
    if value is None:
        return value
    if field in _ROUNDED_TO_0 and value < FLOAT32_TINY:
        raise ValueError(
            f"{value!r} counts as 0 in float32, the precision training computes in (TensorFlow "
            f"flushes subnormals to 0): {_ROUNDED_TO_0[field]}; use at least "
            f"{at_least(FLOAT32_TINY)}"
        )
    if field in _ROUNDED_TO_1 and float32(value) >= 1:
        raise ValueError(
            f"{value!r} rounds to 1 in float32, the precision training computes in: "
            f"{_ROUNDED_TO_1[field]}; use at most {float32(1 - 2.0**-24)!r}"
        )
    return value


def check_dropout(value: float | None) -> float | None:
    """A pydantic validator of a dropout rate: the rate itself, or ValueError when mixed
    precision would drop every unit with it."""
    if value is not None and value > DROPOUT_MAX:
        raise ValueError(
            f"{value!r} rounds above 127/128 in bfloat16, which mixed precision computes "
            f"layers in, and no bfloat16 random number reaches it: it would drop every "
            f"unit; use at most {DROPOUT_MAX!r}"
        )
    return value
