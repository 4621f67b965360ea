"""Follow a job's server-sent events with a rich progress bar until the job ends, then print its
outcome (`fdl train`, `fdl job --follow`)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import quote

import httpx
import typer
from httpx_sse import ServerSentEvent, SSEError, connect_sse
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from fdl import cli_format as fmt
from fdl import cli_shapes as shapes
from fdl.cli_client import ExitCode, Gateway, console, error_of, fail
from fdl.cli_progress import Follower
from fdl.job_records import TERMINAL

MAX_RECONNECTS = 5  # streams in a row that end early (or drop) with no new event
# How long following rides out a gateway or Redis restart (no connection, 502/503/504), counted
# from the last connection or event, and the pause between attempts meanwhile.
RECONNECT_FOR_S = 60.0
RETRY_S = 1.0
TRANSIENT_STATUS = frozenset({502, 503, 504})
# The longest pause a Retry-After gets: the gateway's too_many_streams asks for 5 s, another
# server's answer might ask for an hour.
MAX_RETRY_AFTER_S = 30.0


def job_path(job_id: str) -> str:
    """The job's route, its id percent-encoded: an id (typed, or from the gateway's list) that
    holds a control character, '/' or '?' is sent whole rather than failing or reaching another
    route."""
    return f"/v1/jobs/{quote(job_id, safe='')}"


def _log_message(event: ServerSentEvent) -> str | None:
    """The message of a ``log`` event; None for one without a text message (notes are only
    shown, so one of another shape is skipped rather than an error)."""
    try:
        data = event.json()
    except ValueError:
        return None
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, str) else None


class _Unavailable(Exception):
    """The gateway (or the job store behind it) is away for now: retried until the deadline,
    after ``retry_after`` seconds when the answer asked for a pause."""

    def __init__(self, message: str, code: ExitCode, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code, self.retry_after = code, retry_after


def retry_after_s(response: httpx.Response) -> float | None:
    """The pause an answer's Retry-After asks for in seconds, at most MAX_RETRY_AFTER_S; None
    without one in seconds (absent, or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return min(float(value), MAX_RETRY_AFTER_S)


def _transient(gateway: Gateway, response: httpx.Response) -> None:
    """502/503/504 (a restarting gateway or Redis, a gateway serving all the event streams it
    may) raise _Unavailable; other errors exit."""
    if response.status_code in TRANSIENT_STATUS:
        response.read()
        code, message = error_of(response)
        status = f"{message} ({response.status_code} {code})"
        raise _Unavailable(status, ExitCode.API_ERROR, retry_after_s(response))
    gateway.check(response)


@contextmanager
def _connection(gateway: Gateway) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as error:
        message = f"the gateway at {gateway.url} did not answer in time"
        raise _Unavailable(message, ExitCode.UNREACHABLE) from error
    except httpx.TransportError as error:
        message = f"cannot reach the gateway at {gateway.url} ({type(error).__name__})"
        raise _Unavailable(message, ExitCode.UNREACHABLE) from error


def _read_stream(gateway: Gateway, job_id: str, follower: Follower, retries: _Retries) -> None:
    """Render the job's events after ``follower.last_id`` until the stream ends. The id is kept
    on the follower per event, so a stream that drops mid-way resumes after the last event shown;
    ``retries`` hears when the connection is up."""
    headers = {"Last-Event-ID": follower.last_id} if follower.last_id else {}
    with _connection(gateway):
        try:
            with connect_sse(
                gateway.client,
                "GET",
                f"{job_path(job_id)}/events",
                headers=headers,
                timeout=httpx.Timeout(10.0, read=60.0),
            ) as source:
                _transient(gateway, source.response)
                retries.connected()
                for event in source.iter_sse():
                    if event.id:
                        follower.last_id = event.id
                    if event.event in ("status", "progress"):
                        follower.on_event(event.event, _event_data(gateway, job_id, event))
                    elif event.event == "log":
                        follower.on_log(_log_message(event))
        except SSEError:
            pass  # not an event stream: the job's record below says where it stands


def _event_data(gateway: Gateway, job_id: str, event: ServerSentEvent) -> dict[str, Any]:
    """The data of a status or progress event, checked like the gateway's answers."""
    try:
        data = event.json()
    except ValueError:
        data = event.data
    shape = shapes.StatusEvent if event.event == "status" else shapes.Progress
    what = f"GET {job_path(job_id)}/events (a {event.event} event)"
    return dict(gateway.checked(shape, data, what))


class _Retries:
    """When following gives up: after RECONNECT_FOR_S without a connection to the gateway, or
    after more than MAX_RECONNECTS streams in a row that end (cleanly or by a drop) with no new
    event. A connection clears the first; a new event clears both."""

    def __init__(self, progress: Progress, job_id: str) -> None:
        self.progress, self.job_id = progress, job_id
        self.down_since: float | None = None
        self.failures = 0
        self.opened = False  # the current attempt got a connection

    def connected(self) -> None:
        self.opened = True
        if self.down_since is not None:
            self.down_since = None
            out = self.progress.console
            out.print("Reconnected.", highlight=False, soft_wrap=not out.is_terminal)

    def stream_ended(self, new_events: bool) -> None:
        if new_events:
            self.failures = 0
        elif self.opened:
            self.failures += 1
            if self.failures > MAX_RECONNECTS:
                fail("the job's event stream keeps breaking off", ExitCode.UNREACHABLE)

    def unavailable(self, error: _Unavailable) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            out = self.progress.console
            out.print(
                f"{fmt.safe(error, lines=True)}; reconnecting for up to {RECONNECT_FOR_S:.0f} s "
                "(the job goes on meanwhile)",
                highlight=False,
                markup=False,
                soft_wrap=not out.is_terminal,  # a log's line is never wrapped
            )
        left = self.down_since + RECONNECT_FOR_S - now
        if left < 0:
            shown = fmt.safe(self.job_id)  # one line: fail() keeps a message's newlines
            fail(f"{error}; the job goes on: `fdl job {shown}` shows it", error.code)
        # The pause the answer asked for (never shorter than RETRY_S), cut to the time left so
        # that the last attempt comes at the deadline rather than past it.
        pause = max(RETRY_S, error.retry_after or 0.0)
        time.sleep(min(pause, max(RETRY_S, left)))


def _record_status(gateway: Gateway, job_id: str) -> str:
    with _connection(gateway):
        response = gateway.client.get(job_path(job_id))
    _transient(gateway, response)
    record = gateway.checked(shapes.Job, gateway.json_of(response), f"GET {job_path(job_id)}")
    return str(record["status"])


@contextmanager
def _sigint_to_main_thread() -> Iterator[None]:
    """Threads started inside block SIGINT (a thread inherits its parent's signal mask). The
    kernel gives a process's signal to any thread that does not block it; one that lands on
    rich's refresh thread only sets Python's flag, and the main thread, blocked reading a stream
    that sends nothing (a job waiting its turn), would not raise KeyboardInterrupt before the
    read timed out: Ctrl-C seemed ignored for up to a minute. A SIGINT meanwhile waits until
    the main thread unblocks it here."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: signals only reach the main thread
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def follow(gateway: Gateway, job_id: str, epochs: int) -> str:
    """Stream the job's events until its terminal status; returns that status.

    Reconnects with the Last-Event-ID of the last event shown when the stream ends or drops
    before the end, so no event is shown twice. A gateway or Redis restart (no connection, or
    502/503/504) is ridden out for up to RECONNECT_FOR_S seconds without a connection, then the
    exit code says what was wrong (3 unreachable, 1 the gateway's error); each connection or new
    event starts that count afresh. Attempts are RETRY_S apart, or as long as an answer's
    Retry-After asks (up to MAX_RETRY_AFTER_S): a gateway already serving all the event streams
    it may (503 too_many_streams) is not asked again every second.
    KeyboardInterrupt propagates to the caller, which detaches or cancels.
    """
    # The description can be a status event's text (made safe): the columns never read it as
    # markup.
    columns = (
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}", markup=False),
    )
    with ExitStack() as stack:
        # Entered on the stack, so that a Ctrl-C delivered as SIGINT is unblocked still stops
        # the display (its cursor shown again, its thread ended).
        with _sigint_to_main_thread():  # rich's refresh thread starts with SIGINT blocked
            # Not a terminal: no bar (its last state would be printed cut to 80 columns).
            bar = Progress(
                *columns, console=console, transient=False, disable=not console.is_terminal
            )
            progress = stack.enter_context(bar)
        follower = Follower(progress, epochs)
        retries = _Retries(progress, job_id)
        while follower.status not in TERMINAL:
            before, retries.opened = follower.last_id, False
            try:
                _read_stream(gateway, job_id, follower, retries)
                if follower.status not in TERMINAL:
                    # The stream ended early: read the record, then reconnect (bounded).
                    follower.status = _record_status(gateway, job_id)
            except _Unavailable as error:
                if follower.status in TERMINAL:
                    break  # it dropped after the last event
                retries.stream_ended(follower.last_id != before)
                retries.unavailable(error)
                continue
            if follower.status not in TERMINAL:
                retries.stream_ended(follower.last_id != before)
    return follower.status


def follow_to_end(gateway: Gateway, job_id: str, epochs: int) -> dict[str, Any]:
    """Follow the job until it ends and print its outcome; exit 5 unless it succeeded, else
    return its record. KeyboardInterrupt propagates to the caller, which detaches or cancels."""
    status = follow(gateway, job_id, epochs)
    record: dict[str, Any] = gateway.get(job_path(job_id), expect=shapes.Job)
    summary(record)
    if status != "succeeded":
        raise typer.Exit(int(ExitCode.JOB_FAILED))
    return record


def job_epochs(job: dict[str, Any]) -> int:
    """The epochs of a job's spec: the progress bar's length until its events say."""
    return int((job.get("spec") or {}).get("epochs") or 1)


def detached(job_id: str) -> None:
    """Following stopped (Ctrl-C) while the job goes on: how to follow it again."""
    console.print(
        f"\nDetached; the job keeps running. Follow it with: fdl job {fmt.safe(job_id)} --follow",
        highlight=False,
        markup=False,
        soft_wrap=not console.is_terminal,
    )


def summary(job: dict[str, Any]) -> None:
    """One line on how the job ended: what it published, or why not."""
    result = job.get("result") or {}
    succeeded = Text("Succeeded", style="green")
    if job["status"] == "succeeded" and result:
        accuracy = fmt.pct((result.get("metrics") or {}).get("test_accuracy"))
        if result.get("published"):
            published = f"{fmt.safe(result.get('model'))} version {result.get('version')}"
            line = Text.assemble(succeeded, f": published {published} (test accuracy {accuracy}).")
        else:
            reason = fmt.safe(result.get("reason") or "not published", lines=True)
            line = Text.assemble(succeeded, f" (test accuracy {accuracy}); {reason}.")
    else:
        error = fmt.safe(job.get("error") or "", lines=True)
        line = Text.assemble("Job ", fmt.status(job["status"]), f". {error}")
        line.rstrip()
    console.print(line, soft_wrap=not console.is_terminal)  # a log's line is never wrapped
