"""The CLI's default URL follows FDL_GATEWAY_HOST as well as FDL_GATEWAY_PORT (as `fdl up` reads
them, `.env` included), and only ever names this machine: a gateway bound to one specific address
of this machine is found there without --url (it used to be looked for at 127.0.0.1 only), with
the key file `fdl up` wrote and never through a proxy; a wildcard (0.0.0.0, ::) or unset host
stays 127.0.0.1, an IPv6 address goes in brackets. Any other host (a name other than localhost,
another machine's address, no address at all) or a port outside 1-65535 is a usage error naming
the setting, never its value, only where the default is needed: a `.env` here cannot send the
user's FDL_API_KEY to another host. Real gateways bound to 127.0.0.2, ::1 and an address of one of
this machine's interfaces (127.0.0.1 reaches none of them)."""

from __future__ import annotations

import fcntl
import http.server
import ipaddress
import os
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode
from harness.gateway import ADMIN_KEY, Gateway, gateway_env, write_keys_file
from harness.procs import Process, free_port, wait_http
from tests.cli.test_up_refuses import fdl_up_exit, up_env

CLEAN = {name: None for name in os.environ if name.startswith("FDL_")}


def fdl(*args: str, **env: str | None) -> tuple[int, str]:
    """`fdl ARGS` with only ``env``'s FDL_ variables: its exit code and its output on one line
    (rich wraps messages at the output's width)."""
    result = CliRunner().invoke(app, list(args), env={**CLEAN, **env})
    assert result.exception is None or isinstance(result.exception, SystemExit), result
    return result.exit_code, " ".join(result.output.split())


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@contextmanager
def gateway_on(host: str, label: str, root: Path, logs_dir: Path, redis_url: str) -> Iterator[str]:
    """A gateway bound to ``host`` only; yields its port."""
    port = free_port()
    keys = write_keys_file(root / f"secrets-{label}")
    env = gateway_env(port, redis_url, free_port(), root / "models", keys)
    process = Process(
        f"gateway-on-{label}",
        [sys.executable, "-m", "api"],
        logs_dir,
        env=env | {"FDL_GATEWAY_HOST": host},
    )
    try:
        healthz = httpx.URL(scheme="http", host=host, port=port, path="/healthz")
        wait_http(str(healthz), f"the gateway on {host}", process)
        yield str(port)
    finally:
        process.stop()


def test_a_gateway_on_a_specific_address_is_the_default(
    tmp_path: Path, logs_dir: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gateway_on("127.0.0.2", "127-0-0-2", tmp_path, logs_dir, redis_url) as port:
        code, out = fdl(
            "jobs", "--json", FDL_GATEWAY_HOST="127.0.0.2", FDL_GATEWAY_PORT=port,
            FDL_API_KEY=ADMIN_KEY,
        )  # fmt: skip
        assert code == ExitCode.OK, out
        # From .env, the key from the key file `fdl up` wrote (a loopback address is this
        # machine).
        (tmp_path / "here" / "var").mkdir(parents=True)
        (tmp_path / "here" / "var" / "api_key").write_text(ADMIN_KEY)
        (tmp_path / "here" / ".env").write_text(
            f"FDL_GATEWAY_HOST=127.0.0.2\nFDL_GATEWAY_PORT={port}\n"
        )
        monkeypatch.chdir(tmp_path / "here")
        code, out = fdl("jobs", "--json")
        assert code == ExitCode.OK, out


@pytest.mark.skipif(not has_ipv6_loopback(), reason="platform: no IPv6 loopback here")
def test_an_ipv6_address_goes_in_brackets(tmp_path: Path, logs_dir: Path, redis_url: str) -> None:
    with gateway_on("::1", "ipv6-loopback", tmp_path, logs_dir, redis_url) as port:
        code, out = fdl(
            "jobs", "--json", FDL_GATEWAY_HOST="::1", FDL_GATEWAY_PORT=port, FDL_API_KEY=ADMIN_KEY
        )
        assert code == ExitCode.OK, out
    code, out = fdl("jobs", FDL_GATEWAY_HOST="::1", FDL_GATEWAY_PORT=port, FDL_API_KEY="k")
    assert code == ExitCode.UNREACHABLE, out
    assert f"http://[::1]:{port} (the default" in out
    assert "FDL_GATEWAY_HOST" in out and "FDL_GATEWAY_PORT" in out


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::", ""])
def test_a_wildcard_or_empty_host_is_reached_at_127_0_0_1(gateway: Gateway, wildcard: str) -> None:
    port = str(httpx.URL(gateway.url).port)
    code, out = fdl(
        "jobs", "--json", FDL_GATEWAY_HOST=wildcard, FDL_GATEWAY_PORT=port, FDL_API_KEY=ADMIN_KEY
    )
    assert code == ExitCode.OK, out
    elsewhere = str(free_port())
    code, out = fdl("jobs", FDL_GATEWAY_HOST=wildcard, FDL_GATEWAY_PORT=elsewhere, FDL_API_KEY="k")
    assert code == ExitCode.UNREACHABLE and f"http://127.0.0.1:{elsewhere} (the default" in out


@pytest.mark.parametrize("bad", ["not a host", "10.1.2.3:8000", "[::1]", "http://10.1.2.3"])
def test_a_bad_host_stops_only_a_command_that_needs_the_default(
    gateway: Gateway, bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = fdl("jobs", FDL_GATEWAY_HOST=bad, FDL_API_KEY="k")
    assert code == ExitCode.USAGE, out
    assert "FDL_GATEWAY_HOST" in out and "--url" in out and bad not in out
    code, out = fdl("jobs", "--url", gateway.url, FDL_GATEWAY_HOST=bad, FDL_API_KEY=ADMIN_KEY)
    assert code == ExitCode.OK, out
    # The same from a .env here.
    (tmp_path / ".env").write_text(f"FDL_GATEWAY_HOST={bad}\n")
    monkeypatch.chdir(tmp_path)
    assert fdl("jobs", FDL_API_KEY="k")[0] == ExitCode.USAGE
    assert fdl("jobs", FDL_URL=gateway.url, FDL_API_KEY=ADMIN_KEY)[0] == ExitCode.OK


# Each is refused with the same words, whatever the value: none is ever printed.
NOT_ADDRESSES = ["999.1.1.1", "256.0.0.1", "01.2.3.4", "1.2.3", "a..b", "a.-b", "_", "fe80::1%lo"]
# Addresses of no interface here (documentation ranges, checked below) and host names.
ELSEWHERE = ["198.51.100.7", "203.0.113.9", "2001:db8::7", "example.com", "gateway.internal"]
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
)
SIOCGIFADDR = 0x8915  # linux/sockios.h: an interface's IPv4 address


def usage_error_for(variable: str, value: str) -> str:
    """The output of `fdl jobs` given ``variable=value``, checked to be a usage error naming the
    variable and --url, without a traceback or the value."""
    code, out = fdl("jobs", FDL_API_KEY="k", **{variable: value})
    assert code == ExitCode.USAGE, out
    assert variable in out and "--url" in out and "Traceback" not in out, out
    assert len(value) < 2 or value not in out, out
    return out


@pytest.mark.parametrize("bad", NOT_ADDRESSES + ELSEWHERE)
def test_a_host_that_is_not_this_machine_is_a_usage_error(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same message for every value ("_" is in FDL_GATEWAY_HOST itself).
    assert usage_error_for("FDL_GATEWAY_HOST", bad) == usage_error_for(
        "FDL_GATEWAY_HOST", "not a host"
    )
    # A .env here that names another host stops the exported key going there.
    (tmp_path / ".env").write_text(f"FDL_GATEWAY_HOST={bad}\n")
    monkeypatch.chdir(tmp_path)
    code, out = fdl("jobs", FDL_API_KEY=ADMIN_KEY)
    assert code == ExitCode.USAGE and "FDL_GATEWAY_HOST" in out, out


def test_the_addresses_taken_for_elsewhere_are_not_this_machines() -> None:
    for value in ELSEWHERE:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            continue
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        with socket.socket(family) as probe, pytest.raises(OSError):
            probe.bind((value, 0))


@pytest.mark.parametrize("bad", ["0", "65536", "-1", "100000"])
def test_a_port_outside_1_to_65535_is_a_usage_error_for_the_cli_and_fdl_up(
    bad: str, tmp_path: Path, logs_dir: Path
) -> None:
    out = usage_error_for("FDL_GATEWAY_PORT", bad)
    assert "1 to 65535" in out
    # `fdl up` refuses the same ports (0 used to start a stack on a random port, 65536 to end in
    # a traceback), before it starts anything.
    code, output = fdl_up_exit(
        f"fdl-up-port-{bad}", up_env(tmp_path) | {"FDL_GATEWAY_PORT": bad}, tmp_path, logs_dir
    )
    assert code == 2 and "FDL_GATEWAY_PORT" in output and "1 to 65535" in output, output
    assert "Traceback" not in output
    assert not (tmp_path / "var" / "supervisord.conf").exists()


def interface_address() -> str | None:
    """An IPv4 address of one of this machine's interfaces other than loopback, or None."""
    for _index, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                answer = fcntl.ioctl(
                    probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15])
                )
            except OSError:  # no IPv4 address
                continue
        address = ipaddress.IPv4Address(answer[20:24])
        if not address.is_loopback:
            return str(address)
    return None


class CaptureProxy(http.server.ThreadingHTTPServer):
    """A proxy that forwards nothing: it records each request it is sent and answers 502."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        capture = self

        class Record(http.server.BaseHTTPRequestHandler):
            def record(self) -> None:
                capture.seen.append(f"{self.requestline} {self.headers.get('Authorization')}")
                self.send_error(502)

            do_GET = do_POST = do_DELETE = do_CONNECT = do_HEAD = record

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Record)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def capture_proxy() -> Iterator[CaptureProxy]:
    proxy = CaptureProxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()


def test_an_address_of_this_machine_uses_the_key_file_and_no_proxy(
    tmp_path: Path, logs_dir: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = interface_address()
    if address is None:
        pytest.skip("platform: no interface here with an IPv4 address other than loopback")
    (tmp_path / "here" / "var").mkdir(parents=True)
    (tmp_path / "here" / "var" / "api_key").write_text(ADMIN_KEY)
    with (
        gateway_on(address, "interface", tmp_path, logs_dir, redis_url) as port,
        capture_proxy() as proxy,
    ):
        monkeypatch.chdir(tmp_path / "here")
        where = {"FDL_GATEWAY_HOST": address, "FDL_GATEWAY_PORT": port}
        # No FDL_API_KEY: the key `fdl up` stored is read for the default URL.
        code, out = fdl("jobs", "--json", **where, NO_PROXY=None, no_proxy=None)
        assert code == ExitCode.OK, out
        proxies: dict[str, str | None] = {name: proxy.url for name in PROXY_VARIABLES}
        code, out = fdl("jobs", "--json", **where, **proxies, NO_PROXY=None, no_proxy=None)
        assert code == ExitCode.OK, out
        code, out = fdl(
            "jobs", "--json", **where, **proxies, FDL_API_KEY=ADMIN_KEY, NO_PROXY=None,
            no_proxy=None,
        )  # fmt: skip
        assert code == ExitCode.OK, out
        # From .env as well.
        (tmp_path / "here" / ".env").write_text(
            f"FDL_GATEWAY_HOST={address}\nFDL_GATEWAY_PORT={port}\n"
        )
        code, out = fdl("jobs", "--json", **proxies, NO_PROXY=None, no_proxy=None)
        assert code == ExitCode.OK, out
        assert proxy.seen == []
        # The proxy does capture what is sent through it: a gateway named by --url elsewhere.
        fdl(
            "jobs", "--url", "http://198.51.100.7:9", **proxies, FDL_API_KEY="k", NO_PROXY=None,
            no_proxy=None,
        )  # fmt: skip
        assert len(proxy.seen) == 1, proxy.seen
