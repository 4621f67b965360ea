"""After a followed job published a version, wait until the gateway reports it served
(`fdl train`, `fdl job --follow`), so that a `fdl classify` right after answers from it.

Publishing writes the version into the model repository; the model server loads it at its next
poll of the repository (2 s under `fdl up`). Until then the model's name answers 404
``model_not_found`` (a new model) or from the previous version.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any, NamedTuple
from urllib.parse import quote

import httpx
import typer

from fdl import cli_format as fmt
from fdl import cli_shapes as shapes
from fdl.cli_client import ExitCode, Gateway, console, error_of, fail
from fdl.cli_follow import TRANSIENT_STATUS, retry_after_s

SERVE_TIMEOUT_S = 120.0
# Polls of the model's status start often (a version is often loaded within a second) and back
# off to MAX_POLL_S; an answer's Retry-After (429, 503) asks for longer pauses.
FIRST_POLL_S = 0.25
MAX_POLL_S = 1.0
RETRIED_STATUS = TRANSIENT_STATUS | {429}


def _finite(value: float) -> float:
    """nan would never end the wait, and passes min=0 (every comparison with it is false)."""
    if not math.isfinite(value):
        raise typer.BadParameter("give a number of seconds (0 does not wait)")
    return value


ServeTimeoutOption = Annotated[
    float,
    typer.Option(
        "--serve-timeout",
        min=0,
        callback=_finite,
        metavar="SECONDS",
        help="When the job published a version, wait up to SECONDS until the model server "
        "serves it (exit 6 if it does not); 0: do not wait.",
    ),
]


class _Look(NamedTuple):
    """One answer about the model: the line to print when the wait is over, else what it said
    (for the timeout's message) and the pause its Retry-After asks for."""

    done: str | None
    seen: str = ""
    retry_after: float | None = None


def wait_until_served(gateway: Gateway, job: dict[str, Any], timeout: float) -> None:
    """Return once ``GET /v1/models/{model}`` reports the version the job published AVAILABLE
    (or a newer one: another job's publish superseded it); exit 6 when neither comes within
    ``timeout`` seconds. Nothing to wait for when the job published nothing or ``timeout`` is 0.
    Ctrl-C stops waiting (exit 0: the version is published)."""
    result = job.get("result") or {}
    model, version = result.get("model"), result.get("version")
    if timeout <= 0 or result.get("published") is not True:
        return
    if not isinstance(model, str) or not isinstance(version, int):
        return
    shown = f"{fmt.safe(model)} version {version}"
    _say(f"Waiting for the model server to serve {shown} (up to {timeout:g} s, --serve-timeout)")
    deadline = time.monotonic() + timeout
    pause = FIRST_POLL_S
    try:
        while True:
            look = _look(gateway, model, version, deadline - time.monotonic())
            if look.done is not None:
                _say(look.done)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                fail(
                    f"{shown} is published, but the gateway did not report it served within "
                    f"{timeout:g} s (last: {look.seen}); `fdl models` shows its state, "
                    "--serve-timeout waits longer",
                    ExitCode.NOT_SERVED,
                )
            # The last look comes at the deadline rather than past it.
            time.sleep(min(max(pause, look.retry_after or 0.0), left))
            pause = min(pause * 2, MAX_POLL_S)
    except KeyboardInterrupt:
        _say(f"\nStopped waiting; {shown} is published: `fdl models` shows when it is served.")
        raise typer.Exit(int(ExitCode.OK)) from None


def _say(line: str) -> None:
    """A line as it is: never wrapped at the terminal's width when the output is a pipe or a
    log (docs/ui.md), nor read as markup (a model's name)."""
    console.print(line, highlight=False, markup=False, soft_wrap=not console.is_terminal)


def _look(gateway: Gateway, model: str, version: int, left: float) -> _Look:
    """The model's status as the gateway reports it. No connection, 404 (a gateway that does not
    see the folder yet), 429 and 502/503/504 are waited out; any other error exits as every
    command's does (4 for the key, 1 otherwise)."""
    path = f"/v1/models/{quote(model, safe='')}"
    try:
        response = gateway.client.get(path, timeout=max(1.0, min(10.0, left)))
    except httpx.TimeoutException:
        return _Look(None, f"the gateway at {gateway.url} did not answer in time")
    except httpx.TransportError as error:
        return _Look(None, f"cannot reach the gateway at {gateway.url} ({type(error).__name__})")
    if response.status_code in RETRIED_STATUS or response.status_code == 404:
        code, message = error_of(response)
        return _Look(None, f"{message} ({response.status_code} {code})", retry_after_s(response))
    gateway.check(response)
    detail = gateway.checked(shapes.ModelDetail, gateway.json_of(response), f"GET {path}")
    versions = {v["version"]: v for v in detail["versions"]}
    shown = f"{fmt.safe(model)} version {version}"
    served = [v for v, entry in versions.items() if entry.get("state") == "AVAILABLE"]
    if version in served:
        return _Look(f"{shown} is served.")
    if served and max(served) > version:
        return _Look(f"{shown} was superseded by version {max(served)}, which is served.")
    return _Look(None, _state(detail, versions.get(version)))


def _state(detail: dict[str, Any], entry: dict[str, Any] | None) -> str:
    """Where the version stands, in words, for the timeout's message."""
    if detail.get("server_error"):
        return f"the model server did not answer ({detail['server_error']})"
    if entry is None:
        return "the gateway lists no such version"
    state = str(entry.get("state") or "unknown")
    if entry.get("pending") is True:
        return f"{state}, pending: the model server has not picked it up"
    return f"the model server reports it {state}"
