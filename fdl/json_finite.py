"""Standard JSON for values that may hold NaN or infinities (a diverged job's loss): Python's
``json`` writes them as ``NaN``/``Infinity``, which JSON has not, so browsers, ``jq`` and other
readers refuse the whole document. Here they are written as null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every float that is NaN or infinite, at any depth, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def finite_dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``; never writes NaN or Infinity."""
    return json.dumps(finite(value), allow_nan=False, **options)
