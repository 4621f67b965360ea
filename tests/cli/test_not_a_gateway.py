"""A URL that answers, but not as the gateway (another server, a proxy's HTML page): a clear
message and exit 1, never a traceback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
