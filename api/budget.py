"""A process-wide budget of something costly in flight (decoded pixels, request-body bytes).

Requests take a share before the costly work and give it back after. One that does not fit waits
up to ``wait_s`` for others to finish, then gets 503 with Retry-After. Waiters are not served in
order: whatever fits goes first, so small requests slip past large ones instead of queueing
behind them (a large one that keeps not fitting gets its 503 after ``wait_s``).

A :class:`Reservation` is a share that grows while the costly thing arrives (a request body, as
its bytes come in), so nobody holds budget for what it has not yet sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from api.errors import ApiError
from api.metrics import BUDGET_IN_USE, BUDGET_REFUSED

log = logging.getLogger("fdl.gateway")


class Budget:
    def __init__(self, name: str, capacity: int, wait_s: float, unit: str) -> None:
        self.name = name
        self.capacity = capacity
        self.wait_s = wait_s
        self.unit = unit
        self.in_use = 0
        self._in_use_gauge = BUDGET_IN_USE.labels(name)
        self._refused = BUDGET_REFUSED.labels(name)
        self._changed: asyncio.Condition | None = None  # made on first use, in the serving loop

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    @asynccontextmanager
    async def share(self, amount: int) -> AsyncIterator[None]:
        """Hold ``amount`` (at most the capacity) for the duration of the block."""
        taken = await self.take(amount)
        try:
            yield
        finally:
            await self.give(taken)

    async def take(self, amount: int) -> int:
        """Take ``amount`` (clamped to 0..capacity), waiting up to ``wait_s`` for room.

        Returns:
            What was taken: give exactly that back with :meth:`give`.

        Raises:
            ApiError: 503 ``busy`` (Retry-After: 1) when it did not fit in time.
        """
        amount = min(max(amount, 0), self.capacity)
        changed = self._condition()
        async with changed:
            try:
                # A share that fits now is taken without a timed wait (and its extra task).
                if self.in_use + amount > self.capacity:
                    await asyncio.wait_for(
                        changed.wait_for(lambda: self.in_use + amount <= self.capacity),
                        self.wait_s,
                    )
            except TimeoutError:
                self._refused.inc()
                log.warning(
                    "%s budget full: %s %s in flight, %s more waited %.1fs; 503",
                    self.name,
                    f"{self.in_use:,}",
                    self.unit,
                    f"{amount:,}",
                    self.wait_s,
                )
                raise ApiError(
                    503,
                    "busy",
                    f"the gateway is busy ({self.name} in flight); retry shortly",
                    headers={"Retry-After": "1"},
                ) from None
            self.in_use += amount
            self._in_use_gauge.set(self.in_use)
        return amount

    async def give(self, amount: int) -> None:
        """Give back what :meth:`take` returned."""
        if amount <= 0:
            return
        changed = self._condition()
        async with changed:
            self.in_use -= amount
            self._in_use_gauge.set(self.in_use)
            changed.notify_all()


class Reservation:
    """A share of ``budget`` that only grows when asked to, up to the budget's capacity."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.held = 0

    async def grow_to(self, amount: int) -> None:
        """Hold ``amount`` in all (no-op when already held); 503 ``busy`` as :meth:`Budget.take`."""
        amount = min(amount, self.budget.capacity)
        if amount > self.held:
            self.held += await self.budget.take(amount - self.held)

    async def release(self) -> None:
        held, self.held = self.held, 0
        await self.budget.give(held)
