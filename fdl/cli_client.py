"""The CLI's HTTP client for the gateway: options shared by commands, errors as exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.text import Text

from fdl import cli_local as local
from fdl.cli_format import safe
from fdl.cli_local import is_local, key_file
from fdl.cli_shapes import Shape, problem

NOT_THE_GATEWAY = "is it the FDL gateway? Point --url / FDL_URL at the gateway."

console = Console()
err_console = Console(stderr=True)


class ExitCode(IntEnum):
    """What scripts can rely on (also in `fdl --help` and docs/ui.md)."""

    OK = 0
    API_ERROR = 1  # the gateway answered with an error (bad request, not found, server error)
    USAGE = 2  # bad command-line usage (typer's own code), e.g. an unknown option or no file
    UNREACHABLE = 3  # no connection to the gateway, or it timed out
    AUTH = 4  # the API key is missing, wrong, or lacks the role
    JOB_FAILED = 5  # `fdl train` or `fdl job --follow` followed a job that failed or was cancelled
    NOT_SERVED = 6  # the followed job published a version not served within --serve-timeout
    BROKEN_PIPE = 141  # the output's reader went away (`fdl jobs | true`): 128 + SIGPIPE


def checked_url(context: typer.Context, param: typer.CallbackParam, url: str | None) -> str | None:
    """The --url / FDL_URL given (None when empty or blank: the default URL), when it is a
    gateway's URL, http:// or https:// and a host; else a usage error saying which of the two
    gave it and how to write it (it used to fail as an unreachable gateway, exit 3)."""
    url = (url or "").strip()
    problem = local.url_problem(url) if url else None
    if problem is None:
        return url or None
    source = context.get_parameter_source(param.name or "url")
    given = {"COMMANDLINE": "--url", "ENVIRONMENT": "FDL_URL"}.get(getattr(source, "name", ""))
    rest = url.split("://", 1)[-1].lstrip("/")
    example = f"http://{rest}" if rest and "://" not in url else "http://localhost:8000"
    fail(
        f"{given or '--url / FDL_URL'} {url!r} is not a gateway URL: {problem}; write it "
        f"as e.g. {example}",
        ExitCode.USAGE,
    )


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="FDL_URL",
        callback=checked_url,
        help="Gateway URL. Default: FDL_URL; failing that, the gateway `fdl up` starts on this "
        "machine: http://$FDL_GATEWAY_HOST:$FDL_GATEWAY_PORT (127.0.0.1 for a wildcard "
        "0.0.0.0 / :: or unset, else localhost or an IP address of this machine only; port 8000 "
        "unless set).",
        show_default=False,
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="FDL_API_KEY",
        help="Admin API key. Default: FDL_API_KEY; failing that, for the gateway `fdl up` "
        "started (the URL it recorded in $FDL_VAR_DIR/gateway_url), the key it stored in "
        "$FDL_VAR_DIR/api_key.",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the gateway's JSON instead of a table.")
]


def default_url() -> str:
    """The gateway of `fdl up` on this machine (:func:`fdl.cli_local.default_url`); a bad
    setting of it is a usage error."""
    try:
        return local.default_url()
    except local.BadLocalSetting as error:
        fail(str(error), ExitCode.USAGE)


def fail(message: str, code: ExitCode) -> NoReturn:
    # The message often quotes the gateway (its error message, an answer that is not JSON):
    # Text keeps it from being read as markup, and safe() its control characters from the
    # terminal. In a pipe or a log its lines are never wrapped at 80 columns (docs/ui.md).
    text = Text.assemble(("Error:", "bold red"), " ", safe(message, lines=True))
    err_console.print(text, soft_wrap=not err_console.is_terminal)
    raise typer.Exit(int(code))


@contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """Output to a pipe whose reader has gone (`fdl jobs | true`) ends the command quietly with
    141, what the shell reports for `ls` killed by SIGPIPE, rather than 1 (an API error)."""
    try:
        yield
    except BrokenPipeError:  # click's and typer's echo
        _silence_output()
        raise typer.Exit(int(ExitCode.BROKEN_PIPE)) from None
    except SystemExit as exit_:
        # rich's consoles (ours, and typer's help) end a write to a closed pipe with exit 1
        # after pointing stdout at /dev/null (Console.on_broken_pipe); nothing else here exits
        # with SystemExit.
        if exit_.code != 1 or not _is_devnull(sys.stdout):
            raise
        _silence_output()
        raise typer.Exit(int(ExitCode.BROKEN_PIPE)) from None


def _is_devnull(stream: Any) -> bool:
    try:
        return os.path.samestat(os.fstat(stream.fileno()), os.stat(os.devnull))
    except (OSError, ValueError):  # not a file (a test's captured output)
        return False


def _silence_output() -> None:
    """As Python's signal module docs advise: what is still buffered goes to /dev/null at exit,
    instead of a second BrokenPipeError and its message."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # not a file (a test's captured output)
            continue


def clean_key(key: str | None, source: str) -> str | None:
    """The key as it is sent: surrounding whitespace cut, and an empty or whitespace-only one
    counts as not given. One with a character an HTTP header cannot carry is a usage error (it
    would fail as an unreachable gateway, or with a traceback)."""
    key = (key or "").strip()
    if not all(" " <= char <= "~" for char in key):
        fail(
            f"the API key from {source} holds a character an HTTP header cannot carry "
            "(only printable ASCII can be sent)",
            ExitCode.USAGE,
        )
    return key or None


def stored_key(url: str) -> str | None:
    """The key `fdl up` generated, for the gateway it started only (never sent elsewhere, nor to
    another port on this machine): ``url`` must name the gateway it recorded
    (:func:`fdl.cli_local.is_own_gateway`)."""
    path = key_file()
    if path is None or not local.is_own_gateway(url, path.parent):
        return None
    try:
        key = path.read_text()
    except (OSError, ValueError):  # absent or unreadable, or not text
        return None
    return clean_key(key, str(path))


class Gateway:
    """A thin httpx client: JSON in, JSON out; every failure becomes a message and an exit code."""

    def __init__(self, url: str | None, api_key: str | None = None, timeout: float = 30.0) -> None:
        # Where the URL came from, for the message when nothing answers there.
        self.defaulted = not url
        self.url = (url or default_url()).rstrip("/")
        # The default URL names this machine only, a non-loopback address of it included.
        self.local = self.defaulted or is_local(self.url)
        # The stored key only where no proxy is used: a gateway named by an address of this
        # machine that is not loopback, given by --url, is reached through HTTP_PROXY.
        self.api_key = clean_key(api_key, "--api-key / FDL_API_KEY") or (
            stored_key(self.url) if self.local else None
        )
        headers = {"User-Agent": "fdl-cli"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        # A gateway on this machine is never reached through a proxy (HTTP_PROXY with no
        # NO_PROXY for 127.0.0.1 would be sent the key, the key file's included).
        self.client = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, trust_env=not self.local
        )

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.close()

    def request(self, method: str, path: str, *, expect: type[Shape], **kwargs: Any) -> Any:
        """The JSON answer to ``method path``, checked to have the shape ``expect``."""
        with self.errors():
            response = self.client.request(method, path, **kwargs)
        self.check(response)
        return self.checked(expect, self.json_of(response), f"{method} {response.url.path}")

    def get(self, path: str, *, expect: type[Shape], **kwargs: Any) -> Any:
        return self.request("GET", path, expect=expect, **kwargs)

    def post(self, path: str, *, expect: type[Shape], **kwargs: Any) -> Any:
        return self.request("POST", path, expect=expect, **kwargs)

    def delete(self, path: str, *, expect: type[Shape], **kwargs: Any) -> Any:
        return self.request("DELETE", path, expect=expect, **kwargs)

    def json_of(self, response: httpx.Response) -> Any:
        """The body of a successful answer; one that is not JSON did not come from a gateway
        (FDL_URL names another server, or a proxy answered with its own page)."""
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            fail(
                f"{self.url} answered {response.request.method} {response.url.path} with "
                f"{response.status_code} and {kind}, not JSON: {NOT_THE_GATEWAY}",
                ExitCode.API_ERROR,
            )

    def checked(self, expect: type[Shape], data: Any, what: str) -> Any:
        """``data`` (the answer to ``what``, a request or an event) when it has the shape
        ``expect``; else exit 1 saying what was expected (another service answered)."""
        wrong = problem(expect, data)
        if wrong is not None:
            fail(
                f"{self.url} answered {what} with JSON the CLI cannot use ({wrong}): "
                f"{NOT_THE_GATEWAY}",
                ExitCode.API_ERROR,
            )
        return data

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Connection-level failures as exit code 3 with a hint."""
        try:
            yield
        except httpx.TimeoutException:
            fail(f"the gateway at {self.url} did not answer in time", ExitCode.UNREACHABLE)
        except httpx.TransportError as error:
            where = (
                " (the default: no --url or FDL_URL given; FDL_GATEWAY_HOST and FDL_GATEWAY_PORT "
                "set its address and port)"
                if self.defaulted
                else ""
            )
            fail(
                f"cannot reach the gateway at {self.url}{where} ({type(error).__name__}). "
                "Is it running? Start the stack with `fdl up`, or point --url / FDL_URL at it.",
                ExitCode.UNREACHABLE,
            )

    def check(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        if not response.is_stream_consumed:
            response.read()
        code, message = error_of(response)
        if response.status_code in (401, 403):
            hint = self.no_key_hint() if not self.api_key else "check FDL_API_KEY / --api-key"
            fail(f"{message} ({response.status_code} {code}); {hint}", ExitCode.AUTH)
        fail(f"{message} ({response.status_code} {code})", ExitCode.API_ERROR)

    def no_key_hint(self) -> str:
        """What to do when no key was sent, saying where the CLI looked for one."""
        path = key_file()
        shown = (
            path if path is None or path.is_absolute() or path.parts[:1] == ("..",) else f"./{path}"
        )
        if not self.local:
            looked = "the key file of `fdl up` is only read for a gateway on this machine"
        elif path is None:
            looked = "FDL_VAR_DIR (or the .env here) could not be read to find `fdl up`'s key"
        elif path.is_file() and not local.is_own_gateway(self.url, path.parent):
            own = local.own_gateway(path.parent) or "none recorded"
            looked = f"the key `fdl up` stored in {shown} goes only to its own gateway ({own})"
        else:
            looked = f"none found in {shown} (FDL_VAR_DIR/api_key, from {Path.cwd()})"
        return (
            f"no key given and {looked}: set FDL_API_KEY or pass --api-key (`fdl up` prints "
            "the key), or run fdl where `fdl up` runs (or with its FDL_VAR_DIR)"
        )


def error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
        error = body["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return "http_error", text


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))
