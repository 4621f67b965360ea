"""`fdl up` refuses, before it starts anything, two of its own servers set to one port: each is
free when checked alone, so the stack used to start and the second server to bind failed with
"Address already in use" ten times while the stack stayed up, /readyz 503. Its private Redis
never takes one of those ports either."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fdl.settings import CommonSettings
from fdl.stack import plan_stack, write_redis_url
from harness.procs import Process, free_port, wait_for
from harness.stack import stop_and_check_no_orphans

KEY = "admin-key-for-stack-tests-0123"
PORTS = ("FDL_GATEWAY_PORT", "FDL_SERVING_GRPC_PORT", "FDL_SERVING_REST_PORT")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("FDL_GATEWAY_PORT", "FDL_SERVING_REST_PORT"),
        ("FDL_GATEWAY_PORT", "FDL_SERVING_GRPC_PORT"),
        ("FDL_SERVING_GRPC_PORT", "FDL_SERVING_REST_PORT"),
    ],
)
def test_two_servers_on_one_port_stop_fdl_up_before_anything_starts(
    first: str, second: str, tmp_path: Path, logs_dir: Path
) -> None:
    var_dir = tmp_path / "var"
    env = {
        "FDL_MODEL_DIR": str(var_dir / "models"),
        "FDL_VAR_DIR": str(var_dir),
        "FDL_DATA_DIR": str(var_dir / "data"),
        "FDL_REDIS_URL": "",
        "FDL_API_KEYS": KEY,
        **{name: str(free_port()) for name in PORTS},
    }
    env[second] = env[first]
    process = Process(f"fdl-up-{first}-{second}", ["fdl", "up"], logs_dir, env=env, cwd=tmp_path)
    try:
        wait_for(
            lambda: not process.alive() or (var_dir / "supervisord.pid").exists(),
            60,
            "fdl up to refuse, or to start",
        )
        assert not process.alive(), "fdl up started the stack"
    finally:
        stop_and_check_no_orphans(process)
    output = " ".join(process.log_tail().split())
    assert process.popen.returncode == 2, output
    assert f"{first} and {second} are both {env[first]}" in output, output
    assert "Traceback" not in output
    assert not (var_dir / "supervisord.conf").exists()
    assert not (var_dir / "redis_url").exists()


def settings(var_dir: Path, gateway: int, grpc: int, rest: int) -> CommonSettings:
    return CommonSettings(
        model_dir=var_dir / "models",
        var_dir=var_dir,
        data_dir=var_dir / "data",
        redis_url=None,
        api_keys=KEY,
        gateway_port=gateway,
        serving_grpc_port=grpc,
        serving_rest_port=rest,
    )


@pytest.mark.parametrize("server", [0, 1, 2])
def test_the_private_redis_never_takes_a_port_of_the_stack(server: int, tmp_path: Path) -> None:
    """The last run's Redis port is reused when free, unless a server of the stack is set to it."""
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    last = f"redis://127.0.0.1:{free_port()}/0"
    write_redis_url(var_dir, last)
    ports = [free_port() for _ in range(3)]
    planned = plan_stack(settings(var_dir, *ports)).env["FDL_REDIS_URL"]
    assert urlsplit(planned).port == urlsplit(last).port  # with the password fdl up adds

    ports[server] = urlsplit(last).port or 0
    moved = plan_stack(settings(var_dir, *ports)).env["FDL_REDIS_URL"]
    assert urlsplit(moved).port != urlsplit(last).port
    assert (var_dir / "redis_url").read_text().strip() == moved
