"""The key `fdl up` stored in var/api_key goes only to the gateway that `fdl up` started: the URL it
recorded in var/gateway_url (or, in a var folder from before that record, the default URL, at
FDL_GATEWAY_HOST and FDL_GATEWAY_PORT as `fdl up` binds its gateway). Before, the CLI sent it to
any loopback URL: another service on another local port (anyone's) could collect it from a
`fdl jobs --url http://127.0.0.1:<its port>`.

A real gateway, and a local HTTP server on another port that notes the Authorization header of
every request it gets (what such a service would collect).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fdl.cli_client import ExitCode
from fdl.cli_local import GATEWAY_URL_FILE
from fdl.settings import CommonSettings
from fdl.stack import plan_stack, record_gateway
from harness.gateway import ADMIN_KEY, Gateway
from harness.procs import free_port
from tests.cli.test_default_host import CLEAN, CaptureProxy, capture_proxy, fdl


@pytest.fixture
def collector() -> Iterator[CaptureProxy]:
    """Another local service: it keeps the Authorization header of every request it is sent."""
    with capture_proxy() as server:
        yield server


def _keyed(server: CaptureProxy) -> list[bool]:
    """Whether each request ``server`` got carried an Authorization header."""
    return [not seen.endswith(" None") for seen in server.seen]


def _port(url: str) -> str:
    return str(httpx.URL(url).port)


@pytest.fixture
def var_dir(tmp_path: Path, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A var folder as `fdl up` leaves it for ``gateway``: its key, and its URL recorded."""
    monkeypatch.chdir(tmp_path)  # no .env of the checkout's
    var = tmp_path / "var"
    var.mkdir()
    (var / "api_key").write_text(ADMIN_KEY + "\n")
    record_gateway(var, "127.0.0.1", int(_port(gateway.url)))
    return var


def test_another_loopback_port_never_gets_the_stored_key(
    var_dir: Path, collector: CaptureProxy
) -> None:
    fdl("jobs", "--url", collector.url, FDL_VAR_DIR=str(var_dir))
    # Named as the default URL (FDL_GATEWAY_PORT pointing elsewhere than `fdl up` recorded).
    fdl("jobs", FDL_VAR_DIR=str(var_dir), FDL_GATEWAY_PORT=_port(collector.url))
    assert _keyed(collector) == [False, False], "the stored key went to another local service"
    # An explicit key is the user's choice: sent wherever the user points it.
    fdl("jobs", "--url", collector.url, FDL_VAR_DIR=str(var_dir), FDL_API_KEY="user-key")
    assert collector.seen[-1].endswith(" Bearer user-key"), collector.seen


def test_the_hint_says_where_the_stored_key_goes(var_dir: Path, gateway: Gateway) -> None:
    """A gateway `fdl up` did not start (it recorded another port): 401, and the hint says so."""
    elsewhere = f"http://127.0.0.1:{free_port()}"
    (var_dir / GATEWAY_URL_FILE).write_text(elsewhere + "\n")
    code, out = fdl("jobs", "--url", gateway.url, FDL_VAR_DIR=str(var_dir))
    assert code == ExitCode.AUTH, out
    assert f"stored in {var_dir / 'api_key'} goes only to its own gateway ({elsewhere})" in out


def test_the_gateway_fdl_up_started_gets_it_without_flags(var_dir: Path, gateway: Gateway) -> None:
    for args, env in (
        (("--url", gateway.url), {}),
        (("--url", f"{gateway.url}/"), {}),
        ((), {"FDL_URL": gateway.url}),
        ((), {"FDL_GATEWAY_PORT": _port(gateway.url)}),  # the default URL, as `fdl up` binds
    ):
        code, out = fdl("jobs", "--json", *args, FDL_VAR_DIR=str(var_dir), **env)
        assert code == ExitCode.OK, (args, env, out)


def test_without_a_record_only_the_default_url_gets_it(
    var_dir: Path, gateway: Gateway, collector: CaptureProxy
) -> None:
    """A var folder of a release before the record: the default URL is the gateway's address."""
    (var_dir / GATEWAY_URL_FILE).unlink()
    code, out = fdl("jobs", "--json", FDL_VAR_DIR=str(var_dir), FDL_GATEWAY_PORT=_port(gateway.url))
    assert code == ExitCode.OK, out
    fdl("jobs", "--url", collector.url, FDL_VAR_DIR=str(var_dir))
    assert _keyed(collector) == [False]


@pytest.mark.parametrize(
    ("host", "recorded"),
    [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("localhost", "localhost")],
)
def test_fdl_up_records_its_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, recorded: str
) -> None:
    """`fdl up`'s plan records the URL the CLI reaches its gateway at (the default URL's)."""
    monkeypatch.chdir(tmp_path)
    for name in CLEAN:
        monkeypatch.delenv(name)
    settings = CommonSettings(
        var_dir=tmp_path / "var",
        model_dir=tmp_path / "models",
        data_dir=tmp_path / "data",
        gateway_host=host,
        gateway_port=8123,
        redis_url="redis://127.0.0.1:1/0",
    )
    stack = plan_stack(settings)
    record = (stack.var_dir / GATEWAY_URL_FILE).read_text().strip()
    assert record == f"http://{recorded}:8123"
    # A host that is not this machine's: no record (and none left from before).
    settings.gateway_host = "gateway.example"
    plan_stack(settings)
    assert not (stack.var_dir / GATEWAY_URL_FILE).exists()
