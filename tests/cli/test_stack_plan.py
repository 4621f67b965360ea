"""What `fdl up` plans before it starts anything: the Redis URL file, its port kept across runs,
and supervisord's configuration."""

from __future__ import annotations

import socket
from pathlib import Path

from fdl.settings import CommonSettings
from fdl.stack import plan_stack, redis_banner, supervisor_config


def settings(tmp: Path, **extra: str) -> CommonSettings:
    return CommonSettings(
        model_dir=tmp / "var" / "models",
        var_dir=tmp / "var",
        data_dir=tmp / "var" / "data",
        redis_url=extra.get("redis_url"),
        api_keys="key-for-tests",
    )


def test_private_redis_url_written_and_its_port_reused(tmp_path: Path) -> None:
    first = plan_stack(settings(tmp_path))
    url = first.env["FDL_REDIS_URL"]
    written = tmp_path / "var" / "redis_url"
    assert written.read_text().strip() == url
    assert written.stat().st_mode & 0o777 == 0o600
    assert url in redis_banner(first) and "no password" in redis_banner(first)
    assert plan_stack(settings(tmp_path)).env["FDL_REDIS_URL"] == url

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        moved = plan_stack(settings(tmp_path)).env["FDL_REDIS_URL"]
    assert moved != url and written.read_text().strip() == moved


def test_external_redis_password_is_not_printed(tmp_path: Path) -> None:
    stack = plan_stack(settings(tmp_path, redis_url="redis://:s3cret@redis.example:6380/2"))
    assert "redis" not in stack.commands
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
