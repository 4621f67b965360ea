"""Settings a service would take and then fail with, refused when read, by variable and reason:
timeouts beyond what a socket or a gRPC deadline holds (every job route 500, every classify 504
in 10 ms), ports past 65535 (taken modulo 65536), trusted proxies that are no address (every
client behind the proxy in one rate-limit bucket), unknown log levels, a CA file with no
certificate (every classify 503), a model folder that is a file or on a volume not mounted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from uvicorn.middleware.proxy_headers import _TrustedHosts

from api.settings import SHUTDOWN_GRACE_S, GatewaySettings
from fdl.settings import CommonSettings, settings_problem


@pytest.fixture(autouse=True)
def no_fdl_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("FDL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env


def problem(**settings: object) -> str:
    with pytest.raises(ValidationError) as caught:
        GatewaySettings(**settings)  # type: ignore[arg-type]
    return settings_problem(caught.value)


TIMEOUTS = [
    "rate_limit_timeout_s",
    "rate_limit_backoff_s",
    "job_store_timeout_s",
    "predict_timeout_s",
    "metadata_timeout_s",
    "metadata_cache_s",
    "decode_wait_s",
    "header_timeout_s",
    "body_timeout_s",
    "write_timeout_s",
    "keepalive_timeout_s",
    "promote_timeout_s",
    "replica_sync_s",
]


@pytest.mark.parametrize("name", TIMEOUTS)
@pytest.mark.parametrize("value", ["1e10", "inf", "nan"])
def test_every_timeout_is_finite_and_at_most_a_day(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"FDL_{name.upper()}", value)
    with pytest.raises(ValidationError) as caught:
        GatewaySettings()
    line = settings_problem(caught.value)
    assert line.startswith(f"FDL_{name.upper()}: "), line
    monkeypatch.setenv(f"FDL_{name.upper()}", "86400")
    assert getattr(GatewaySettings(), name) == 86400


@pytest.mark.parametrize("value", ["1e10", "inf", "nan", "11", "10.5", "0", "-1"])
def test_the_shutdown_grace_is_above_0_and_at_most_the_stop_waits(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FDL_SHUTDOWN_GRACE_S may only be lowered: the stop waits of `fdl up`, Compose and
    Kubernetes are sized for SHUTDOWN_GRACE_S (api/settings.py)."""
    assert GatewaySettings().shutdown_grace_s == SHUTDOWN_GRACE_S == 10
    monkeypatch.setenv("FDL_SHUTDOWN_GRACE_S", value)
    with pytest.raises(ValidationError) as caught:
        GatewaySettings()
    line = settings_problem(caught.value)
    assert line.startswith("FDL_SHUTDOWN_GRACE_S: "), line
    for fine in ("10", "0.5"):
        monkeypatch.setenv("FDL_SHUTDOWN_GRACE_S", fine)
        assert GatewaySettings().shutdown_grace_s == float(fine)


@pytest.mark.parametrize("name", ["gateway_port", "serving_grpc_port", "serving_rest_port"])
@pytest.mark.parametrize("value", ["99999", "65536", "0", "-1"])
def test_ports_are_ports(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"FDL_{name.upper()}", value)
    for settings_class in (CommonSettings, GatewaySettings):
        with pytest.raises(ValidationError) as caught:
            settings_class()
        assert settings_problem(caught.value).startswith(f"FDL_{name.upper()}: ")
    monkeypatch.setenv(f"FDL_{name.upper()}", "65535")
    assert getattr(GatewaySettings(), name) == 65535


def uvicorn_trusts(value: str) -> _TrustedHosts:
    """The trusted hosts of uvicorn's ProxyHeadersMiddleware, given the list the gateway passes
    (api/__main__.py: forwarded_allow_ips)."""
    return _TrustedHosts([part.strip() for part in value.split(",") if part.strip()])


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("127.0.0.1/33", "is neither an IP address nor a CIDR network (nor *)"),
        ("garbage", "is neither an IP address nor a CIDR network (nor *)"),
        ("10.0.0.0/8,proxy.local", "is neither an IP address nor a CIDR network (nor *)"),
        ("10.0.0.1/8", "has host bits set (the network is 10.0.0.0/8)"),
        ("::1, fd00::1/8", "has host bits set (the network is fd00::/8)"),
    ],
)
def test_trusted_proxies_must_be_addresses_or_networks(bad: str, reason: str) -> None:
    line = problem(trusted_proxies=bad)
    entry = bad.rsplit(",", 1)[-1].strip()
    assert line == f"FDL_TRUSTED_PROXIES: {entry!r} {reason}", line
    # What uvicorn would have done with it: a host name no peer is (a proxy at 10.1.2.3 was
    # never believed for 10.0.0.1/8).
    trusted = uvicorn_trusts(bad)
    assert entry in trusted.trusted_literals
    assert "10.1.2.3" not in uvicorn_trusts("10.0.0.1/8") and "fd00::5" not in trusted


def test_any_proxy_must_be_the_only_entry() -> None:
    line = problem(trusted_proxies="10.0.0.0/8, *")
    assert line == "FDL_TRUSTED_PROXIES: '*' (any proxy) must be the only entry", line
    assert "192.0.2.1" not in uvicorn_trusts("10.0.0.0/8, *")  # uvicorn: "*" a host name
    assert GatewaySettings(trusted_proxies=" * ").trusted_proxies == " * "
    assert "192.0.2.1" in uvicorn_trusts(" * ")


def test_trusted_proxies_that_parse_are_kept_and_trusted_by_uvicorn() -> None:
    value = "127.0.0.1, 10.0.0.0/8,192.168.1.0/24, ::1, fd00::/8, 172.16.0.9/32"
    assert GatewaySettings(trusted_proxies=value).trusted_proxies == value
    trusted = uvicorn_trusts(value)
    assert not trusted.trusted_literals and not trusted.always_trust
    for peer in ["127.0.0.1", "10.200.3.4", "192.168.1.77", "::1", "fd00::5", "172.16.0.9"]:
        assert peer in trusted, peer
    assert "192.168.2.1" not in trusted and "172.16.0.8" not in trusted


def test_log_level_is_a_logging_level_in_any_case() -> None:
    assert GatewaySettings(log_level="debug").log_level == "DEBUG"  # type: ignore[arg-type]
    assert problem(log_level="bogus").startswith("FDL_LOG_LEVEL: Input should be 'CRITICAL'")


@pytest.mark.parametrize(
    ("host", "target"),
    [("::1", "[::1]:8500"), ("[::1]", "[::1]:8500"), ("10.0.0.5", "10.0.0.5:8500")],
)
def test_an_ipv6_serving_host_is_bracketed_in_the_target(host: str, target: str) -> None:
    assert GatewaySettings(serving_host=host).serving_target == target


def test_a_ca_file_with_no_certificate_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    )
    line = problem(serving_tls_ca_file=garbage)
    assert line.startswith("FDL_SERVING_TLS_CA_FILE: holds no usable PEM CA certificate"), line


def test_a_model_dir_that_is_a_file_or_on_a_missing_mount_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "models"
    a_file.write_text("")
    assert problem(model_dir=a_file) == f"FDL_MODEL_DIR: {a_file} exists and is not a folder"
    missing = tmp_path / "mnt" / "models"
    assert problem(model_dir=missing) == (
        f"FDL_MODEL_DIR: {missing} does not exist, nor does its parent folder (a volume not "
        "mounted?)"
    )
    assert GatewaySettings(model_dir=tmp_path / "new").model_dir == tmp_path / "new"
    # The default (var/models) is made where missing, its parent with it (`fdl up`).
    assert GatewaySettings().model_dir == Path("./var/models")


def test_a_problem_line_never_holds_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FDL_GATEWAY_PORT", "secret-looking-value")
    monkeypatch.setenv("FDL_PROFILES", '{"secret-looking-value')
    with pytest.raises(Exception) as caught:  # pydantic-settings' own error
        GatewaySettings()
    line = settings_problem(caught.value)
    assert line.startswith("FDL_PROFILES: not valid JSON ("), line
    assert "secret" not in line
    monkeypatch.delenv("FDL_PROFILES")
    with pytest.raises(ValidationError) as validation:
        GatewaySettings()
    line = settings_problem(validation.value)
    assert line.startswith("FDL_GATEWAY_PORT: Input should be a valid integer"), line
    assert "secret" not in line


def test_a_dotenv_that_is_not_utf8_is_named_without_its_bytes(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"FDL_API_KEYS=\xffsecret-looking-value\n")
    with pytest.raises(UnicodeDecodeError) as caught:
        GatewaySettings()
    line = settings_problem(caught.value)
    assert line == ".env is not UTF-8 text (invalid start byte at byte 13)", line
