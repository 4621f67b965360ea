"""`fdl up`'s start-up banner names the gateway by a URL a browser or curl takes: an IPv6 host in
brackets (``http://[::1]:8000``; before, ``http://::1:8000``, which no client parses)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from fdl.stack import gateway_url
from harness.procs import Process, wait_for
from harness.stack import stop_and_check_no_orphans
from tests.cli.test_up_refuses import up_env


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("localhost", "http://localhost:8000"),
        ("::1", "http://[::1]:8000"),
        ("::", "http://[::]:8000"),
        ("[::1]", "http://[::1]:8000"),
        ("fe80::1%eth0", "http://[fe80::1%25eth0]:8000"),
    ],
)
def test_the_gateway_url_is_one_clients_parse(host: str, url: str) -> None:
    assert gateway_url(host, 8000) == url
    if "%" not in host:  # httpx takes no zone
        parsed = httpx.URL(url)
        assert (parsed.host, parsed.port) == (host.strip("[]"), 8000)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="platform: no IPv6 loopback here")
def test_fdl_up_prints_an_ipv6_gateway_in_brackets(tmp_path: Path, logs_dir: Path) -> None:
    env = {**up_env(tmp_path), "FDL_GATEWAY_HOST": "::1"}
    process = Process("fdl-up-ipv6-banner", ["fdl", "up"], logs_dir, env=env, cwd=tmp_path)
    try:
        # The whole log: what the stack writes while it stops can push the banner out of a tail.
        line = wait_for(
            lambda: next(
                (x for x in process.log_path.read_text().splitlines() if "starting: gateway" in x),
                None,
            ),
            60,
            "the banner",
            check=process.ensure_alive,
        )
    finally:
        stop_and_check_no_orphans(process)
    assert f"gateway http://[::1]:{env['FDL_GATEWAY_PORT']} " in line, line
