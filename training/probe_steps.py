"""The steps of ``fdl-worker-probe`` (:mod:`training.probe`), each run in a thread with a
deadline: a step still running then (a hung Redis, a dead resolver, which no signal interrupts)
is abandoned in its thread, and the probe ends without it (:func:`os._exit`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

# The name of a step's thread (training.probe.PROG, "-step").
THREAD_NAME = "fdl-worker-probe-step"
T = TypeVar("T")
# Steps that overran their deadline, still running in their threads.
left_behind: list[threading.Thread] = []


class Overran(Exception):
    """A step still running at its deadline (left behind in its thread)."""


class _Step(threading.Thread):
    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(name=THREAD_NAME, daemon=True)
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as error:  # re-raised by within()
            self.error = error


def within(until: float, work: Callable[[], T]) -> T:
    """``work()`` run in a thread: its result or its error, or :class:`Overran` at ``until``
    (``time.monotonic()``), the thread then left running (in :data:`left_behind`)."""
    step = _Step(work)
    step.start()
    step.join(max(0.0, until - time.monotonic()))
    if step.is_alive():
        left_behind.append(step)
        raise Overran
    if step.error is not None:
        raise step.error
    return cast(T, step.result)
