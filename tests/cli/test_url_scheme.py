"""A gateway URL without ``http://`` or ``https://`` (or with another scheme, or no host) is a
usage error that names where it came from (``--url`` or ``FDL_URL``) and how to write it. Before,
`fdl jobs --url localhost:18300` exited 3, "cannot reach the gateway … (UnsupportedProtocol). Is
it running?", with the gateway running there. Against a real gateway."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode
from harness.gateway import ADMIN_KEY, Gateway

runner = CliRunner()


def jobs(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["jobs", *args], env={"FDL_API_KEY": ADMIN_KEY, **(env or {})})


def test_a_url_without_its_scheme_is_a_usage_error_naming_its_source(gateway: Gateway) -> None:
    assert gateway.url.startswith("http://")
    port = gateway.url.rsplit(":", 1)[1]
    cases = [
        ("--url", f"localhost:{port}", ("--url", f"localhost:{port}"), {"FDL_URL": gateway.url}),
        ("FDL_URL", f"127.0.0.1:{port}", (), {"FDL_URL": f"127.0.0.1:{port}"}),
    ]
    for given, bare, args, env in cases:
        result = jobs(*args, env=env)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert " ".join(result.output.split()) == (
            f"Error: {given} '{bare}' is not a gateway URL: it does not start with http:// or "
            f"https://; write it as e.g. http://{bare}"
        ), result.output
    # Written as the message says, the same gateway answers; whitespace around it is cut.
    assert jobs("--url", f"http://localhost:{port}").exit_code == ExitCode.OK
    assert jobs(env={"FDL_URL": f"  {gateway.url}/ "}).exit_code == ExitCode.OK


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://127.0.0.1:1", "it does not start with http:// or https://"),
        ("http://", "it names no host"),
        ("https:///v1", "it names no host"),
    ],
)
def test_another_scheme_or_no_host_is_a_usage_error(url: str, problem: str) -> None:
    result = jobs("--url", url)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"--url '{url}' is not a gateway URL: {problem}" in result.output
    assert "http://localhost:8000" in result.output and "cannot reach" not in result.output
