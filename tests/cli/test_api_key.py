"""The admin key as the CLI sends it: surrounding whitespace cut, an empty or whitespace-only
FDL_API_KEY / --api-key or key file counting as none (the stored key of the gateway `fdl up`
recorded is used), and a key no HTTP header can carry refused as a usage error; against a real
gateway, recorded as `fdl up` records its own (var/gateway_url)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode
from fdl.stack import record_gateway
from harness.gateway import ADMIN_KEY, Gateway


def store_key(gateway: Gateway, var_dir: Path, key: str) -> None:
    """``var_dir`` as `fdl up` leaves it for ``gateway``: ``key`` stored, its URL recorded (the
    only gateway the stored key is sent to)."""
    (var_dir / "api_key").write_text(key)
    port = httpx.URL(gateway.url).port
    assert port is not None, gateway.url
    record_gateway(var_dir, "127.0.0.1", port)


def fdl_jobs(gateway: Gateway, var_dir: Path, key: str | None, *extra: str):
    env = {"FDL_VAR_DIR": str(var_dir), "FDL_API_KEY": key}
    return CliRunner().invoke(app, ["jobs", "--json", "--url", gateway.url, *extra], env=env)


@pytest.mark.parametrize("blank", ["", " ", "\t \n"])
def test_a_blank_key_counts_as_none_and_the_stored_key_is_used(
    gateway: Gateway, tmp_path: Path, blank: str
) -> None:
    store_key(gateway, tmp_path, f"{ADMIN_KEY}\n")
    for result in (
        fdl_jobs(gateway, tmp_path, blank),
        fdl_jobs(gateway, tmp_path, None, "--api-key", blank),
    ):
        assert result.exit_code == ExitCode.OK, result.output
        assert '"jobs"' in result.output


@pytest.mark.parametrize("stored", [None, "", "  \n"])
def test_no_key_anywhere_is_refused_by_the_gateway_with_the_hint(
    gateway: Gateway, tmp_path: Path, stored: str | None
) -> None:
    if stored is not None:
        store_key(gateway, tmp_path, stored)
    result = fdl_jobs(gateway, tmp_path, "  ")
    assert result.exit_code == ExitCode.AUTH, result.output
    assert "set FDL_API_KEY" in " ".join(result.output.split())


def test_whitespace_around_a_key_is_cut(gateway: Gateway, tmp_path: Path) -> None:
    result = fdl_jobs(gateway, tmp_path, f"  {ADMIN_KEY}\n")
    assert result.exit_code == ExitCode.OK, result.output


@pytest.mark.parametrize("where", ["FDL_API_KEY", "key file"])
def test_a_key_no_header_can_carry_is_a_usage_error(
    gateway: Gateway, tmp_path: Path, where: str
) -> None:
    key = "admin-key-é-0123456789"
    if where == "key file":
        store_key(gateway, tmp_path, key)
    result = fdl_jobs(gateway, tmp_path, key if where == "FDL_API_KEY" else None)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.output.split())
    assert "cannot carry" in text and key not in text
    assert ("FDL_API_KEY" if where == "FDL_API_KEY" else str(tmp_path / "api_key")) in text
