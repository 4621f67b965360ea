"""A URL that answers, but not as the gateway (another server, a proxy's HTML page, JSON of
another shape): a clear message and exit 1, never a traceback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode


class HtmlPage(BaseHTTPRequestHandler):
    """What a captive portal or a web server on the wrong port answers: 200 and HTML."""

    def do_GET(self) -> None:
        body = b"<html><body>Please sign in</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("args", [("models",), ("jobs",), ("job", "0" * 32)])
def test_an_answer_that_is_not_json_says_so(html_server: str, args: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*args, "--url", html_server], env={"FDL_API_KEY": "k"})
    assert result.exit_code == ExitCode.API_ERROR, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.output.split())
    assert "text/html, not JSON" in text and "FDL_URL" in text


class OtherJson(BaseHTTPRequestHandler):
    """Another service on the gateway's URL: 200 and JSON of its own to every request; the
    server's ``answers`` maps a path's start to its body (the longest match, else ``default``)."""

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        routes: dict[str, Any] = getattr(self.server, "answers", {})
        path = self.path.split("?", 1)[0]
        matches = sorted((start for start in routes if path.startswith(start)), key=len)
        body = routes[matches[-1]] if matches else getattr(self.server, "default", None)
        kind = "application/json"
        if isinstance(body, bytes):  # an event stream, as it is
            data, kind = body, "text/event-stream"
        else:
            data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = answer

    def log_message(self, *_args: object) -> None:
        pass


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A server of ``handler`` on a free port, in a thread, for a fixture to yield."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def other_service() -> Iterator[ThreadingHTTPServer]:
    yield from serve(OtherJson)


@pytest.fixture
def json_server(other_service: ThreadingHTTPServer) -> ThreadingHTTPServer:
    """The service, with no answers set yet."""
    other_service.answers, other_service.default = {}, None  # type: ignore[attr-defined]
    return other_service


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


JOB_ID = "0123456789abcdef" * 2
COMMANDS = {
    "models": ["models"],
    "models --json": ["models", "--json"],
    "jobs": ["jobs"],
    "job": ["job", JOB_ID],
    "job by prefix": ["job", "0123"],
    "job --follow": ["job", JOB_ID, "--follow"],
    "cancel": ["cancel", JOB_ID],
    "train": ["train", "mnist_logreg", "--epochs", "1"],
    "classify": ["classify", "mnist_cnn", "IMAGE"],
    "promote": ["promote", "mnist_cnn", "2"],
}
# What a proxy or another service may answer with 200, and what the CLI says it got.
WRONG = {
    "[]": ([], "a JSON array"),
    "foo": ({"foo": 1}, "field required"),
    "text": ("text", "a JSON string"),
}


def run(args: list[str], url: str, tmp_path: Path) -> Any:
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG")
    args = [str(image) if arg == "IMAGE" else arg for arg in args]
    return CliRunner().invoke(app, [*args, "--url", url], env={"FDL_API_KEY": "k"})


def assert_clear_error(result: Any, url: str, *said: str) -> None:
    assert result.exit_code == ExitCode.API_ERROR, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.output.split())
    assert url in text and "FDL_URL" in text, text
    for words in said:
        assert words in text, text


@pytest.mark.parametrize("wrong", WRONG)
@pytest.mark.parametrize("command", COMMANDS)
def test_json_of_another_shape_says_what_was_expected(
    json_server: ThreadingHTTPServer, command: str, wrong: str, tmp_path: Path
) -> None:
    body, got = WRONG[wrong]
    json_server.default = body  # type: ignore[attr-defined]
    url = url_of(json_server)
    assert_clear_error(run(COMMANDS[command], url, tmp_path), url, "expected", got)


JOB = {"id": JOB_ID, "status": "queued", "spec": {"model": "mnist_logreg", "epochs": 1}}


@pytest.mark.parametrize(
    ("answers", "said"),
    [
        # A job page whose job has no status, and one whose id is a number.
        ({"/v1/jobs": {"jobs": [{"id": JOB_ID}], "total": 1}}, "jobs.0.status: field required"),
        ({"/v1/jobs": {"jobs": [{"id": 7, "status": "queued"}], "total": 1}}, "jobs.0.id"),
        # The job's events: a status event whose data is a string; a progress event whose
        # epoch is text.
        (
            {"/v1/jobs/": JOB, f"/v1/jobs/{JOB_ID}/events": b"event: status\ndata: ok\n\n"},
            "a status event",
        ),
        (
            {
                f"/v1/jobs/{JOB_ID}/events": b'event: progress\ndata: {"epoch": "one"}\n\n',
                "/v1/jobs/": JOB,
            },
            "epoch: input should be a valid integer",
        ),
    ],
)
def test_a_wrong_field_or_event_is_named(
    json_server: ThreadingHTTPServer, answers: dict[str, Any], said: str, tmp_path: Path
) -> None:
    json_server.answers = answers  # type: ignore[attr-defined]
    url = url_of(json_server)
    command = ["jobs"] if "/v1/jobs" in answers else ["job", JOB_ID, "--follow"]
    assert_clear_error(run(command, url, tmp_path), url, said)


def test_classify_with_fewer_predictions_than_images(
    json_server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    json_server.default = {"version": 1, "predictions": []}  # type: ignore[attr-defined]
    url = url_of(json_server)
    result = run(COMMANDS["classify"], url, tmp_path)
    assert_clear_error(result, url, "0 predictions for 1 images")
