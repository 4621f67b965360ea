"""A setting that fails validation stops the process with a message that names the setting and the
reason, and never quotes what was read: a check across fields used to print the start of the whole
settings dict (``input_value={'redis_url': 'redis://:p...``), secrets included, into the log."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from training.settings import WorkerSettings

# Secrets that start with tokens found nowhere else in the output: any prefix of them that is long
# enough to mean anything contains these four characters.
API_KEY = "kQ7z" + secrets.token_hex(16)
PASSWORD = "pW3x" + secrets.token_hex(8)
REDIS_URL = f"redis://:{PASSWORD}@fdl-redis:6379/0"
SECRET_PREFIXES = (API_KEY[:4], PASSWORD[:4], "redis://:")


def run_gateway(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """``python -m api`` (the gateway, as harness/gateway.py starts it) with only these FDL_
    settings plus a password in FDL_REDIS_URL and an admin key, from a folder with no .env."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FDL_")}
    env |= {"FDL_REDIS_URL": REDIS_URL, "FDL_API_KEYS": API_KEY, "FDL_LOG_JSON": "false"}
    env |= settings
    return subprocess.run(
        [sys.executable, "-m", "api"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_no_secret(output: str) -> None:
    assert "input_value" not in output, output
    for prefix in SECRET_PREFIXES:
        assert prefix not in output, (prefix, output)


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (
            {"FDL_DECODE_BUDGET_PIXELS": "1"},
            "FDL_DECODE_BUDGET_PIXELS must be at least FDL_MAX_IMAGE_PIXELS",
        ),
        (
            {"FDL_MAX_BODY_BYTES": "2000000", "FDL_BODY_BUDGET_BYTES": "1000000"},
            "FDL_BODY_BUDGET_BYTES must be at least FDL_MAX_BODY_BYTES",
        ),
        (
            {"FDL_SERVING_TLS_CERT_FILE": "cert.pem"},
            "FDL_SERVING_TLS_CERT_FILE and FDL_SERVING_TLS_KEY_FILE go together",
        ),
        (
            {"FDL_MAX_BATCH_SIZE": "abc"},
            "FDL_MAX_BATCH_SIZE: Input should be a valid integer, unable to parse string as an "
            "integer",
        ),
        ({"FDL_LOG_LEVEL": "bogus"}, "FDL_LOG_LEVEL: Input should be 'CRITICAL', 'FATAL'"),
        ({"FDL_GATEWAY_PORT": "99999"}, "FDL_GATEWAY_PORT: not a port number from 1 to 65535"),
        ({"FDL_PROFILES": "{"}, "FDL_PROFILES: not valid JSON ("),
        ({"FDL_API_KEYS_FILE": "latin1.keys"}, "FDL_API_KEYS_FILE ("),
    ],
    ids=[
        "decode-budget",
        "body-budget",
        "tls-pair",
        "integer",
        "log-level",
        "port",
        "json",
        "utf8",
    ],
)
def test_gateway_refuses_bad_settings_without_quoting_them(
    tmp_path: Path, settings: dict[str, str], reason: str
) -> None:
    """One line on stderr, ``fdl-gateway: FDL_X: reason``, exit status 1: no traceback."""
    (tmp_path / "cert.pem").write_text("not read: only its existence is checked\n")
    # A key file in Latin-1: its decoding error would quote a byte of the key.
    (tmp_path / "latin1.keys").write_bytes(b"kQ7z\xe9" + API_KEY.encode() + b"\n")
    settings = {k: str(tmp_path / v) if k.endswith("_FILE") else v for k, v in settings.items()}
    result = run_gateway(tmp_path, **settings)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stdout == "" and result.stderr.count("\n") == 1, output
    assert result.stderr.startswith(f"fdl-gateway: {reason}"), output
    assert_no_secret(output)
    assert "xe9" not in output and "\xe9" not in output


def test_a_field_error_still_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every settings class inherits the config: the worker's field errors say which and why."""
    for name in list(os.environ):
        if name.startswith("FDL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FDL_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("FDL_VISIBILITY_TIMEOUT_S", "5")
    with pytest.raises(ValidationError) as caught:
        WorkerSettings(_env_file=None)
    message = str(caught.value)
    assert "visibility_timeout_s" in message
    assert "greater than or equal to 60" in message
    assert_no_secret(message)
