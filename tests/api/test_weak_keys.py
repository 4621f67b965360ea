"""The gateway refuses to start with the shipped placeholder key or a short key, naming the setting
and never the key; the keys the tests, the deploy tests and `fdl up` use are accepted."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from api.main import create_app
from api.settings import GatewaySettings
from fdl.settings import WeakKeyError
from fdl.stack import free_port, port_free
from harness.containers import TEST_API_KEY
from harness.gateway import ADMIN_KEY, CLASSIFY_KEY, write_keys_file
from harness.procs import REPO_ROOT

SHIPPED_SECRET = REPO_ROOT / "deploy" / "k8s" / "base" / "secret.yaml"


def shipped_placeholder() -> str:
    """The key deploy/k8s/base/secret.yaml ships (what `kubectl apply -k` deploys unedited)."""
    secret = yaml.safe_load(SHIPPED_SECRET.read_text())
    return str(secret["stringData"]["api-keys"])


@pytest.fixture(autouse=True)
def _no_fdl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the keys each test passes: none from the environment running the tests."""
    for name in list(os.environ):
        if name.startswith("FDL_"):
            monkeypatch.delenv(name)


def settings(**keys: object) -> GatewaySettings:
    return GatewaySettings(_env_file=None, **keys)  # type: ignore[call-arg]


def test_the_shipped_placeholder_is_refused() -> None:
    placeholder = shipped_placeholder()
    assert placeholder.startswith("replace-me") and len(placeholder) >= 16
    with pytest.raises(WeakKeyError) as caught:
        settings(api_keys=placeholder).check_keys()
    message = str(caught.value)
    assert "FDL_API_KEYS: key 1 of 1 is a placeholder (it starts with 'replace-me')" in message
    assert "openssl rand -hex 32" in message
    assert placeholder not in message


def test_a_short_key_is_refused_and_not_shown() -> None:
    with pytest.raises(WeakKeyError) as caught:
        settings(api_keys=f"{ADMIN_KEY}, s3cr3t").check_keys()
    message = str(caught.value)
    assert "FDL_API_KEYS: key 2 of 2 is 6 characters long; at least 16 are required" in message
    assert "s3cr3t" not in message and ADMIN_KEY not in message


def test_every_key_setting_is_checked(tmp_path: Path) -> None:
    admin_file = tmp_path / "admin_keys"
    admin_file.write_text(f"# admin keys\n{ADMIN_KEY}\nCHANGEME-later-please-0123\n")
    classify_file = tmp_path / "classify_keys"
    classify_file.write_text("tiny\n")
    with pytest.raises(WeakKeyError) as caught:
        settings(
            api_keys_file=admin_file,
            classify_keys="short-key",
            classify_keys_file=classify_file,
        ).check_keys()
    message = str(caught.value)
    assert f"FDL_API_KEYS_FILE ({admin_file}): key 2 of 2 is a placeholder" in message
    assert "FDL_CLASSIFY_KEYS: key 1 of 1 is 9 characters long" in message
    assert f"FDL_CLASSIFY_KEYS_FILE ({classify_file}): key 1 of 1 is 4 characters" in message


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("aaaaaaaaaaaaaaaa", "uses only 1 different characters"),
        ("testtesttesttest", "uses only 3 different characters"),
        ("passwordpassword", "repeats a unit of 8 characters"),
        ("0123456789abcdef0123456789abcdef", "repeats a unit of 16 characters"),
        ("1234567890123456", "runs along the alphabet, the digits or a keyboard row"),
        ("abcdefghijklmnop", "runs along the alphabet, the digits or a keyboard row"),
        ("PONMLKJIHGFEDCBA", "runs along the alphabet, the digits or a keyboard row"),
        ("qwertyuiopasdfgh", "runs along the alphabet, the digits or a keyboard row"),
    ],
)
def test_a_guessable_key_is_refused_and_not_shown(key: str, reason: str) -> None:
    """Long enough, visible ASCII, and still among the first keys a dictionary attack tries."""
    with pytest.raises(WeakKeyError) as caught:
        settings(api_keys=f"{ADMIN_KEY},{key}").check_keys()
    message = str(caught.value)
    assert f"FDL_API_KEYS: key 2 of 2 {reason}" in message
    assert key not in message and "key 1 of 2" not in message


def test_random_keys_are_accepted() -> None:
    """Random keys as people make them, hex from 16 characters and URL-safe base64."""
    keys = [secrets.token_hex(8) for _ in range(2000)] + [
        secrets.token_urlsafe(12) for _ in range(2000)
    ]
    settings(api_keys=",".join(keys)).check_keys()


def test_the_keys_in_use_are_accepted(tmp_path: Path) -> None:
    """The harness's keys, the container tests' key, `fdl up`'s generated key, and no key."""
    settings(
        api_keys=f"{ADMIN_KEY},{TEST_API_KEY},{secrets.token_urlsafe(32)}",
        api_keys_file=write_keys_file(tmp_path / "secrets"),
        classify_keys=CLASSIFY_KEY,
    ).check_keys()
    settings().check_keys()


def test_the_app_is_not_built_with_a_weak_key() -> None:
    with pytest.raises(WeakKeyError, match="FDL_API_KEYS"):
        create_app(settings(api_keys=shipped_placeholder()))


def test_fdl_gateway_exits_before_it_listens(tmp_path: Path) -> None:
    """`python -m api` (the image's `fdl-gateway`) with the placeholder: exit 1, one clear line on
    stderr, no traceback, and the port was never opened."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    env.update(
        FDL_API_KEYS=shipped_placeholder(),
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
    assert result.stderr.startswith("fdl-gateway: refusing to start with a weak API key: ")
    assert "FDL_API_KEYS: key 1 of 1 is a placeholder" in result.stderr
    assert "Traceback" not in result.stderr
    assert port_free(port)


@pytest.mark.parametrize("setting", ["api_keys_file", "classify_keys_file"])
def test_a_named_key_file_that_is_missing_refuses_to_start(tmp_path: Path, setting: str) -> None:
    """A typo, an unmounted Secret or an empty file must not start a gateway with fewer keys than
    meant."""
    missing = tmp_path / "not-mounted" / "keys"
    with pytest.raises(WeakKeyError) as caught:
        settings(api_keys=ADMIN_KEY, **{setting: missing}).check_keys()
    assert f"FDL_{setting.upper()} ({missing}) is not a file holding a key" in str(caught.value)
    with pytest.raises(WeakKeyError, match="is not a file"):
        settings(api_keys=ADMIN_KEY, **{setting: tmp_path}).check_keys()  # a folder
    empty = tmp_path / "empty"
    empty.write_text("# the keys go here\n\n")
    with pytest.raises(WeakKeyError, match="is not a file holding a key"):
        settings(api_keys=ADMIN_KEY, **{setting: empty}).check_keys()
