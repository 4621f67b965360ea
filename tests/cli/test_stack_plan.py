"""What `fdl up` plans before it starts anything: the Redis URL file, its port kept across runs,
and supervisord's configuration."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fdl.settings import CommonSettings, WeakKeyError
from fdl.stack import plan_stack, redacted, redis_banner
from fdl.stack_supervisor import supervisor_config


def settings(tmp: Path, **extra: str) -> CommonSettings:
    return CommonSettings(
        model_dir=tmp / "var" / "models",
        var_dir=tmp / "var",
        data_dir=tmp / "var" / "data",
        redis_url=extra.get("redis_url"),
        api_keys=extra.get("api_keys", "admin-key-for-stack-tests"),
    )


def test_private_redis_url_written_and_its_port_reused(tmp_path: Path) -> None:
    first = plan_stack(settings(tmp_path))
    url = first.env["FDL_REDIS_URL"]
    written = tmp_path / "var" / "redis_url"
    assert written.read_text().strip() == url
    assert written.stat().st_mode & 0o777 == 0o600
    password = (tmp_path / "var" / "redis_password").read_text().strip()
    assert url == f"redis://:{password}@127.0.0.1:{urlsplit(url).port}/0"
    assert password not in redis_banner(first) and redacted(url) in redis_banner(first)
    assert plan_stack(settings(tmp_path)).env["FDL_REDIS_URL"] == url

    port = urlsplit(url).port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        moved = plan_stack(settings(tmp_path)).env["FDL_REDIS_URL"]
    assert moved != url and written.read_text().strip() == moved


def test_private_redis_password_is_in_a_0600_config_file_not_its_argv(tmp_path: Path) -> None:
    """Every local user reads a command line (/proc/<pid>/cmdline, `ps`): the password goes to
    redis-server in var/redis.conf (0600), its first argument; made once, kept across runs."""
    stack = plan_stack(settings(tmp_path))
    var = tmp_path / "var"
    password = (var / "redis_password").read_text().strip()
    assert len(password) >= 32
    argv = stack.commands["redis"]
    assert argv[1] == str((var / "redis.conf").resolve())
    assert not any(password in arg for arg in argv)
    assert f'requirepass "{password}"' in (var / "redis.conf").read_text().splitlines()
    for name in ("redis_password", "redis.conf", "redis_url"):
        assert (var / name).stat().st_mode & 0o777 == 0o600, name
    assert plan_stack(settings(tmp_path)).env["FDL_REDIS_URL"] == stack.env["FDL_REDIS_URL"]
    assert (var / "redis_password").read_text().strip() == password


def test_external_redis_password_is_not_printed(tmp_path: Path) -> None:
    stack = plan_stack(settings(tmp_path, redis_url="redis://:s3cret@redis.example:6380/2"))
    assert "redis" not in stack.commands
    # No Redis of its own: no password of its own either.
    assert not (tmp_path / "var" / "redis_password").exists()
    assert not (tmp_path / "var" / "redis.conf").exists()
    banner = redis_banner(stack)
    assert "s3cret" not in banner and "redis://:***@redis.example:6380/2" in banner
    assert "s3cret" in (tmp_path / "var" / "redis_url").read_text()


def test_supervisor_restarts_children_and_escapes_percent(tmp_path: Path) -> None:
    stack = plan_stack(settings(tmp_path))
    stack.commands["gateway"] = ["fdl-gateway", "--note=100%"]
    config = supervisor_config(stack)
    for name in ("redis", "serving", "worker", "gateway"):
        assert f"[program:{name}]" in config
    assert config.count("autorestart=true") == 4
    assert config.count("stopasgroup=true") == 4 and config.count("killasgroup=true") == 4
    assert "command=fdl-gateway --note=100%%" in config


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ("admin-key-for-stack-tests,short", "key 2 of 2 is 5 characters long"),
        ("replace-me-with-a-long-random-key", "key 1 of 1 is a placeholder"),
    ],
)
def test_weak_admin_keys_stop_fdl_up_before_anything_starts(
    tmp_path: Path, keys: str, reason: str
) -> None:
    # The gateway would refuse them and exit at once, again and again under the supervisor.
    with pytest.raises(WeakKeyError, match=reason) as raised:
        plan_stack(settings(tmp_path, api_keys=keys))
    assert "short" not in str(raised.value) and "replace-me-with" not in str(raised.value)
    assert not (tmp_path / "var" / "redis_url").exists()


@pytest.mark.parametrize("stored", ["", " \n\t\n"])
def test_an_empty_key_file_gets_a_new_key(tmp_path: Path, stored: str) -> None:
    """An empty var/api_key would start a gateway with no admin key and print none."""
    path = tmp_path / "var" / "api_key"
    path.parent.mkdir(parents=True)
    path.write_text(stored)
    stack = plan_stack(settings(tmp_path, api_keys=""))
    assert stack.api_key_generated and stack.api_key and len(stack.api_key) >= 32
    assert stack.env["FDL_API_KEYS"] == stack.api_key
    assert path.read_text() == f"{stack.api_key}\n"
    assert path.stat().st_mode & 0o777 == 0o600
    again = plan_stack(settings(tmp_path, api_keys=""))
    assert (again.api_key, again.api_key_generated) == (stack.api_key, False)


def test_a_weak_stored_key_stops_fdl_up_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "var" / "api_key"
    path.parent.mkdir(parents=True)
    path.write_text("tiny-key\n")
    with pytest.raises(WeakKeyError, match=f"{path}: key 1 of 1 is 8 characters long") as raised:
        plan_stack(settings(tmp_path, api_keys=""))
    assert f"delete {path}" in str(raised.value) and "tiny-key" not in str(raised.value)
