"""A FDL_REDIS_URL that Redis's clients cannot use stops every service at start with one line
naming the setting and what is wrong, never quoting the URL (it may hold the password). Before,
the worker read ``redis:6379`` or ``notaurl`` as an AMQP host and retried it 100 times, and an
``http://`` URL stopped the worker (KeyError) and the gateway (exit 3, under a restart policy a
loop) with a traceback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.connection
from kombu import Connection

from fdl.redis_url import credentials_in_userinfo, redis_url_problem
from fdl.settings import REDIS_URL_UNSET
from harness.procs import VENV_BIN
from tests.cli.test_up_refuses import up_env
from tests.cli.test_up_settings import refused
from tests.test_settings_errors import run_gateway
from tests.training.test_worker_settings import run_worker

PASSWORD = "pW3xq" + "7" * 20
# (URL, what the line says): each one a URL that redis-py or kombu refuses or misreads.
BAD = {
    "no-scheme": (f"redis:{PASSWORD}@redis:6379", "it names no host"),
    "host-port": ("redis:6379", "it names no host"),
    "not-a-url": ("notaurl", "its scheme is not redis:// or rediss://"),
    "http": (f"http://:{PASSWORD}@redis:6379/0", "its scheme is not redis:// or rediss://"),
    "unix": ("unix:///run/redis/redis.sock", "a Unix socket (unix://) is not supported"),
    "port": (f"redis://:{PASSWORD}@redis:63790000/0", "its port is not a number"),
    "database": (f"redis://:{PASSWORD}@redis:6379/zero", "the database after the host"),
}
GOOD = [
    "redis://redis",
    "redis://127.0.0.1:6379/0",
    f"redis://:{PASSWORD}@fdl-redis:6379/3",
    f"rediss://user:{PASSWORD}@redis.example.com:6380/",
    "redis://[::1]:6379/0",
    f"redis://redis:6379/0?password={PASSWORD}",
]


def assert_one_line(result: subprocess.CompletedProcess[str], prog: str, reason: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stdout == "" and result.stderr.count("\n") == 1, output
    assert result.stderr.startswith(f"{prog}: FDL_REDIS_URL: {reason}"), output
    assert "redis://[:PASSWORD@]HOST" in result.stderr, output  # the form it should have
    assert PASSWORD[:5] not in output and "Traceback" not in output, output


@pytest.mark.parametrize("case", list(BAD))
def test_the_gateway_refuses_it_in_one_line(case: str, tmp_path: Path) -> None:
    url, reason = BAD[case]
    assert_one_line(run_gateway(tmp_path, FDL_REDIS_URL=url), "fdl-gateway", reason)


@pytest.mark.parametrize("case", list(BAD))
def test_the_worker_refuses_it_in_one_line(case: str, tmp_path: Path) -> None:
    url, reason = BAD[case]
    assert_one_line(run_worker(tmp_path, FDL_REDIS_URL=url), "fdl-worker", reason)


@pytest.mark.parametrize("case", ["host-port", "http"])
def test_the_worker_probe_refuses_it_in_one_line(case: str, tmp_path: Path) -> None:
    url, reason = BAD[case]
    env = {name: value for name, value in os.environ.items() if not name.startswith("FDL_")}
    result = subprocess.run(
        [str(VENV_BIN / "fdl-worker-probe")],
        cwd=tmp_path,
        env=env | {"FDL_REDIS_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_one_line(result, "fdl-worker-probe", reason)


def test_fdl_up_refuses_it_in_one_line(tmp_path: Path, logs_dir: Path) -> None:
    url, reason = BAD["http"]
    env = {**up_env(tmp_path), "FDL_REDIS_URL": url}
    output = refused("fdl-up-redis-url", env, tmp_path, logs_dir)
    assert output.startswith(f"fdl up: FDL_REDIS_URL: {reason}"), output
    assert PASSWORD[:5] not in output


def clients_take(url: str) -> bool:
    """Whether redis-py (the job store) and kombu (Celery's broker) both read ``url`` as a Redis
    server's address (a host, a port and a database)."""
    try:
        options = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        connection = Connection(credentials_in_userinfo(url))  # as the settings pass it
        connection.transport  # noqa: B018 (kombu looks its transport up: KeyError)
    except (ValueError, KeyError):
        return False
    return (
        connection.transport_cls in ("redis", "rediss")
        and bool(options.get("host"))
        and bool(connection.hostname)
        and (str(connection.virtual_host or "").strip("/") or "0").isdigit()
    )


@pytest.mark.parametrize("url", [url for url, _ in BAD.values()] + GOOD)
def test_what_is_refused_is_what_the_clients_cannot_use(url: str) -> None:
    assert (redis_url_problem(url) is None) == clients_take(url), url


@pytest.mark.parametrize(
    ("run", "prog"), [(run_gateway, "fdl-gateway"), (run_worker, "fdl-worker")]
)
def test_no_redis_url_stops_each_service_in_one_line(
    run: Callable[..., subprocess.CompletedProcess[str]], prog: str, tmp_path: Path
) -> None:
    """An empty FDL_REDIS_URL (as unset): one line and exit status 1. Before, the gateway ended
    its start-up in a RuntimeError traceback (exit 3, a restart loop under a restart policy) and
    the worker at import."""
    result = run(tmp_path, FDL_REDIS_URL="")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr == f"{prog}: {REDIS_URL_UNSET}\n", output
