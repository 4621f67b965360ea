"""What a request cut short by the gateway's shutdown is answered: 503 ``shutting_down`` with
``Retry-After: 1`` and ``Connection: close``, JSON as every error, never uvicorn's text/plain 500.

A SIGTERM or SIGINT stops the gateway (api/probe.py: its probe listener closes first); then:

- A request whose body is still arriving is answered at once and its connection closed
  (:meth:`api.http_guard.GuardedHttpToolsProtocol.shutdown`): nothing of it has run beyond the
  reading of its body, and its client can send it again elsewhere at once instead of spending the
  grace uploading to a gateway that is going away (a slow upload would take up to
  FDL_BODY_TIMEOUT_S). The route sees a disconnect; the access line and metrics record 503.
- A job's event stream ends as soon as the shutdown begins, between two events, with a ``retry``
  hint and its closing chunk (api/events.py: sse-starlette sees uvicorn's ``should_exit``): its
  client resumes at once elsewhere with ``Last-Event-ID``, and open streams never hold the stop
  for the grace.
- Every other request in flight has FDL_SHUTDOWN_GRACE_S (uvicorn's graceful shutdown) to finish.
  uvicorn then cancels those still running; one whose answer has not started is answered by
  :class:`api.middleware.GatewayMiddleware` once the cancellation has run through its route (a
  promotion undoes its change first, api/promotion.py), one whose answer has started is closed.
  The app's own shutdown (closing its clients) waits up to SETTLE_S for those cancelled requests
  to end (:class:`Running`), and the 503 goes out before the process exits. A promotion's undo
  puts its files back at once and has UNDO_S to send the old config to the model servers; one
  that does not answer in time (loading, stalled) leaves the undo to the next process that takes
  the repository's lock, in full (api/promotion_undo.py): the 503 never waits for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Message, Receive

from api.errors import ApiError

STATUS = 503
CODE = "shutting_down"
MESSAGE = "the gateway is stopping; send the request again"
RETRY_AFTER_S = 1
# How long the app's shutdown waits for the requests uvicorn cancelled to end, before it closes
# the clients they use (part of the gateway's stop budget: fdl/stack_supervisor.py).
SETTLE_S = 3.0
# How long a cancelled promotion's undo may spend on the model servers: within SETTLE_S, with
# room for its answer and the lock's release.
UNDO_S = SETTLE_S - 1.0


def shutting_down() -> ApiError:
    """The answer to a request the shutdown cut short (sent with ``Connection: close``)."""
    return ApiError(STATUS, CODE, MESSAGE, headers={"Retry-After": str(RETRY_AFTER_S)})


def close_response(body: bytes) -> bytes:
    """The whole answer written to a connection whose request's body was still arriving, below
    the app (which never answers it): ``body`` is the JSON error."""
    return (
        f"HTTP/1.1 {STATUS} Service Unavailable\r\ncontent-type: application/json\r\n"
        f"x-content-type-options: nosniff\r\nretry-after: {RETRY_AFTER_S}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class Running:
    """The tasks of the requests a middleware is running, so that the app's shutdown lets the ones
    uvicorn has cancelled end first (:meth:`lifespan`)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def lifespan(self, receive: Receive) -> Receive:
        """The lifespan's ``receive``, which hands over ``lifespan.shutdown`` (the lifespan then
        closes the app's clients) once the cancelled requests have ended, or after SETTLE_S."""

        async def receive_settled() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.settle(SETTLE_S)
            return message

        return receive_settled

    async def settle(self, timeout_s: float) -> None:
        cancelled = [task for task in self.tasks if task.cancelling() and not task.done()]
        if cancelled:
            await asyncio.wait(cancelled, timeout=timeout_s)
