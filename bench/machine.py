"""How fast this machine runs Python right now, printed beside a benchmark's numbers.

The 2-vCPU VMs these benchmarks run on differ by 2-4x from one session to the next and drift
within a run, so absolute milliseconds only mean something next to the machine's speed at the
time. The probe is the one docs/ quote: ``python -m timeit "sum(range(100000))"``.
"""

from __future__ import annotations

import timeit


def python_speed_ms() -> float:
    """``sum(range(100000))`` in ms, best of 5 rounds of 100 (what ``python -m timeit`` prints
    for it here); about 1.2 on the fastest of these VMs seen, 2.9 on the slowest."""
    return min(timeit.repeat("sum(range(100000))", repeat=5, number=100)) / 100 * 1000


def speed_line(before: float, after: float) -> str:
    return (
        f"Python speed probe (sum(range(100000))): {before:.2f} ms before, {after:.2f} ms after "
        "(about 1.2 on the fastest VM seen)"
    )
