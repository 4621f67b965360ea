"""A job submission (`fdl train`) that survives a lost answer: sent with a new
``Idempotency-Key`` and sent again under the same key (tenacity) while the gateway may have got it
without the answer reaching the CLI, so the retries create one job (docs/training.md, "Submitting
once"). Other requests of the CLI are sent once (:meth:`fdl.cli_client.Gateway.request`).
How many tries, and for how long, are FDL_SUBMIT_TRIES and FDL_SUBMIT_RETRY_FOR_S
(:class:`SubmitRetry`), read when `fdl train` submits."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings

from fdl import cli_format as fmt
from fdl.cli_client import ExitCode, Gateway, err_console, error_of, fail
from fdl.cli_local import UNREADABLE
from fdl.cli_shapes import Shape
from fdl.settings import FDL_SETTINGS

if TYPE_CHECKING:
    from tenacity import RetryCallState

HEADER = "Idempotency-Key"
TRIES = 8  # tries in all (the default of FDL_SUBMIT_TRIES)
# No try starts later than this after the first one failed: long enough for the gateway to take
# over a submission that an earlier try left unconfirmed (about 23 s by default; docs/training.md).
# The default of FDL_SUBMIT_RETRY_FOR_S.
RETRY_FOR_S = 45.0
# The most either setting takes: past them a value is a typo (a try a second for 10 minutes).
MAX_TRIES = 100
MAX_RETRY_FOR_S = 600.0
RETRY_AFTER_CAP_S = 10.0  # the most a Retry-After is waited
# Failures after which the request may have reached the gateway, or never left: a reset or closed
# connection (its answer lost), a timeout, a connection refused. Not an invalid URL or header
# (UnsupportedProtocol, LocalProtocolError), which a retry would only repeat. A connection refused
# at the first try is not tried again: nothing was sent, and no gateway is running there (said at
# once, as before); refused after an earlier try, the gateway is restarting.
MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)  # of those, the ones that sent nothing


class SubmitRetry(BaseSettings):
    """How `fdl train` retries its submission (docs/training.md, "Submitting once"): at most
    ``submit_tries`` tries (1: none again), none starting later than ``submit_retry_for_s``
    after the first failure (0: none again)."""

    model_config = FDL_SETTINGS

    submit_tries: int = Field(TRIES, ge=1, le=MAX_TRIES)
    submit_retry_for_s: float = Field(RETRY_FOR_S, ge=0, le=MAX_RETRY_FOR_S, allow_inf_nan=False)


def retry_settings() -> SubmitRetry:
    """FDL_SUBMIT_TRIES and FDL_SUBMIT_RETRY_FOR_S; an invalid one is a usage error naming it
    (never its value). A ``.env`` here that cannot be read (not UTF-8) sets neither, and stops
    nothing (docs/ui.md): the environment's values and the defaults apply."""
    try:
        try:
            return SubmitRetry()
        except UNREADABLE:
            return SubmitRetry(_env_file=None)
    except ValidationError as error:
        problems = "; ".join(
            f"FDL_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        fail(f"invalid setting: {problems}", ExitCode.USAGE)


def submit_once(gateway: Gateway, path: str, *, json: Any, expect: type[Shape]) -> Any:
    """The gateway's answer to ``POST path`` with ``json``, checked to have the shape
    ``expect`` (an earlier try's job, said ``Idempotent-Replayed``, the same). Tried again
    under the same key after :data:`MAYBE_SENT`, 503 and 409 ``idempotency_key_in_use`` (an
    earlier try still being queued), as :func:`retry_settings` bound it, each retry said on stderr;
    then it fails as :meth:`Gateway.request` does (exit 3, or 1 with the gateway's error),
    saying that a job may exist when a try may have reached the gateway (so does Ctrl-C)."""
    # Imported here, as fdl.store_retry does: the commands that never submit start without it.
    from tenacity import Retrying

    settings = retry_settings()
    tries, retry_for_s = settings.submit_tries, settings.submit_retry_for_s
    first_failure: list[float] = []
    reached: list[bool] = []  # a try may have reached the gateway

    def stop(state: RetryCallState) -> bool:
        if not first_failure:
            first_failure.append(state.outcome_timestamp or 0.0)
        ends = (state.outcome_timestamp or 0.0) + state.upcoming_sleep
        return state.attempt_number >= tries or ends - first_failure[0] > retry_for_s

    def again(state: RetryCallState) -> bool:
        if _reached(state):
            reached.append(True)
        return _again(state)

    retrying = Retrying(
        retry=again,
        stop=stop,
        wait=_wait,
        before_sleep=lambda state: _say_retry(state, tries),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    key = uuid.uuid4().hex
    hint = (
        "; the submission may still have created a job: check `fdl jobs` before submitting "
        f"again (its {HEADER} was {key})"
    )
    try:
        with gateway.errors():
            try:
                response = retrying(gateway.client.post, path, json=json, headers={HEADER: key})
            except httpx.TransportError as error:
                if reached:  # else as any request's (gateway.errors)
                    where = f"gave up submitting to the gateway at {gateway.url}"
                    fail(f"{where}: {_why(error)}{hint}", ExitCode.UNREACHABLE)
                raise
    except KeyboardInterrupt:
        if reached:
            stopped = fmt.plain(f"\nStopped{hint}.", lines=True)
            err_console.print(stopped, soft_wrap=not err_console.is_terminal)
        raise
    if reached and response.is_error and response.status_code not in (401, 403):
        code, message = error_of(response)
        fail(f"{message} ({response.status_code} {code}){hint}", ExitCode.API_ERROR)
    gateway.check(response)
    return gateway.checked(expect, gateway.json_of(response), f"POST {response.url.path}")


def _again(state: RetryCallState) -> bool:
    """Whether to send the same submission again: after :data:`MAYBE_SENT` (but a connection
    refused at the first try), or when the gateway asks for it later: 503 (unavailable: Redis,
    the broker, a proxy in front of it), or 409 while the key's first try is still being queued."""
    outcome = state.outcome
    if outcome is None:
        return False
    if outcome.failed:
        error = outcome.exception()
        if isinstance(error, httpx.ConnectError) and state.attempt_number == 1:
            return False
        return isinstance(error, MAYBE_SENT)
    response: httpx.Response = outcome.result()
    if response.status_code == 503:
        return True
    return response.status_code == 409 and error_of(response)[0] == "idempotency_key_in_use"


def _wait(state: RetryCallState) -> float:
    """The answer's Retry-After (seconds, up to :data:`RETRY_AFTER_CAP_S`), else 0.25 s doubling
    from try to try (up to 2 s: a gateway that refuses connections is given up within 4 s)."""
    outcome = state.outcome
    if outcome is not None and not outcome.failed:
        after = outcome.result().headers.get("Retry-After", "").strip()
        if after.isdigit():
            return min(float(after), RETRY_AFTER_CAP_S)
    return float(min(0.25 * 2 ** (state.attempt_number - 1), 2.0))


def _reached(state: RetryCallState) -> bool:
    """Whether the try may have reached the gateway, and made a job: it failed after the
    connection was made (:data:`MAYBE_SENT` but :data:`NOT_SENT`), or was answered 503 or 409
    ``idempotency_key_in_use``."""
    outcome = state.outcome
    if outcome is not None and outcome.failed:
        error = outcome.exception()
        return isinstance(error, MAYBE_SENT) and not isinstance(error, NOT_SENT)
    return _again(state)


def _why(error: BaseException) -> str:
    """What became of a try that failed with ``error``."""
    if isinstance(error, NOT_SENT):
        what = "no connection"
    elif isinstance(error, httpx.TimeoutException):
        what = "no answer in time"
    else:
        what = "the answer was lost"
    return f"{what} ({type(error).__name__})"


def _say_retry(state: RetryCallState, tries: int) -> None:
    """A dim line on stderr for each retry: why, when, and which try of ``tries`` comes next."""
    outcome = state.outcome
    if outcome is None:
        return
    error = outcome.exception() if outcome.failed else None
    if error is not None:
        why = _why(error)
    else:
        response: httpx.Response = outcome.result()
        why = f"the gateway answered {response.status_code} {error_of(response)[0]}"
        if response.status_code == 409:
            why += " (an earlier try is still being queued)"
    line = (
        f"submitting: {why}; sending it again under the same {HEADER} in "
        f"{state.upcoming_sleep:g} s (try {state.attempt_number + 1} of {tries})"
    )
    err_console.print(fmt.plain(line, "dim"), soft_wrap=not err_console.is_terminal)
