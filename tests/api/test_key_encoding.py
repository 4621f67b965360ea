"""Key files saved with a UTF-8 byte order mark serve their first key; a key with a character
outside visible ASCII (which a header carries as Latin-1, so a UTF-8 client never matches it)
stops the gateway at start-up, named by setting and position, never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from api.settings import GatewaySettings
from fdl.settings import WeakKeyError
from fdl.stack import free_port, port_free
from harness.gateway import ADMIN_KEY, Gateway, bearer
from harness.procs import REPO_ROOT

BOM_KEY = "bom-first-key-0123456789abcdef"
SECOND_KEY = "second-key-0123456789abcdef"
UNUSABLE = {
    "non-ascii": "clé-secrète-0123456789abcdef",
    "space": "key with spaces 0123456789",
    "tab": "key-with-a\ttab-0123456789",
    "control": "key-with-a-bell\x07-0123456789",
    "bom-inside": "key-with-a-bom\ufeff-0123456789",
}


@pytest.fixture(autouse=True)
def _no_fdl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the keys each test passes: none from the environment running the tests."""
    for name in list(os.environ):
        if name.startswith("FDL_"):
            monkeypatch.delenv(name)


def bom_file(path: Path) -> Path:
    """What Notepad's "UTF-8 with BOM" (or PowerShell 5's Out-File -Encoding utf8) saves."""
    path.write_bytes(f"{BOM_KEY}\r\n{SECOND_KEY}\r\n".encode("utf-8-sig"))
    return path


def test_a_byte_order_mark_is_no_part_of_the_first_key(tmp_path: Path) -> None:
    settings = GatewaySettings(_env_file=None, api_keys_file=bom_file(tmp_path / "keys"))  # type: ignore[call-arg]
    assert settings.admin_keys() == [BOM_KEY, SECOND_KEY]
    settings.check_keys()


def test_a_gateway_serves_the_first_key_of_a_bom_file(
    tmp_path: Path, redis_url: str, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> None:
    keys_file = bom_file(tmp_path / "bom_keys")
    with lone_gateway("gateway-bom", redis_url, FDL_API_KEYS_FILE=str(keys_file)) as gateway:
        for key in (BOM_KEY, SECOND_KEY, ADMIN_KEY):
            response = httpx.get(f"{gateway.url}/v1/jobs", headers=bearer(key), timeout=10)
            assert response.status_code == 200, response.text


@pytest.mark.parametrize("key", UNUSABLE.values(), ids=UNUSABLE.keys())
def test_a_key_outside_visible_ascii_is_refused(tmp_path: Path, key: str) -> None:
    classify_file = tmp_path / "classify_keys"
    classify_file.write_text(f"# classify keys\n{SECOND_KEY}\n{key}\n", encoding="utf-8")
    with pytest.raises(WeakKeyError) as caught:
        GatewaySettings(  # type: ignore[call-arg]
            _env_file=None, api_keys=ADMIN_KEY, classify_keys_file=classify_file
        ).check_keys()
    message = str(caught.value)
    assert f"FDL_CLASSIFY_KEYS_FILE ({classify_file}): key 2 of 2 has a character outside " in (
        message
    )
    assert "0x21-0x7E" in message
    assert "FDL_API_KEYS:" not in message
    assert key not in message and key.strip() not in message


def test_fdl_gateway_exits_on_a_non_ascii_key(tmp_path: Path) -> None:
    """`python -m api` (the image's `fdl-gateway`): exit 1 with one clear line, never listening."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    env.update(
        FDL_API_KEYS=f"{ADMIN_KEY},{UNUSABLE['non-ascii']}",
        FDL_GATEWAY_PORT=str(port),
        FDL_REDIS_URL="redis://127.0.0.1:1/0",
        PYTHONPATH=str(REPO_ROOT),
    )
    result = subprocess.run(
        [sys.executable, "-m", "api"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "FDL_API_KEYS: key 2 of 2 has a character outside visible ASCII" in result.stderr
    assert UNUSABLE["non-ascii"] not in result.stderr and "Traceback" not in result.stderr
    assert port_free(port)
