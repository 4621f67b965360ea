"""A Redis URL with its password in the query (``redis://host:6379/0?password=...``), which
redis-py takes, works for every process: before, Celery's broker (kombu) failed on it with
``TypeError: dict() got multiple values for keyword argument 'password'``, stopping the worker at
start and failing every job submission of the gateway with 500. Each process moves the query's
credentials into the userinfo when it reads FDL_REDIS_URL (fdl/settings.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import redis
from kombu.utils.url import parse_url as kombu_parse_url
from redis.connection import parse_url as redis_parse_url

from fdl.redis_server import redis_server_argv
from fdl.redis_url import credentials_in_userinfo
from fdl.settings import CommonSettings
from harness.gateway import gateway_running
from harness.procs import Process, free_port, wait_for
from harness.worker import MNIST_TINY, start_worker

PASSWORD = "pW/+ &" + secrets.token_hex(8)  # characters that need quoting in a URL


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[int]:
    """A private Redis that requires PASSWORD; yields its port."""
    port = free_port()
    argv = [
        *redis_server_argv(port, tmp_path_factory.mktemp("redis-pw")),
        "--requirepass",
        PASSWORD,
    ]
    process = Process("redis-password", argv, logs_dir)
    client = redis.Redis(port=port, password=PASSWORD)
    try:
        wait_for(client.ping, 20, "redis with a password", check=process.ensure_alive)
        yield port
    finally:
        client.close()
        process.stop()


def test_a_query_password_reaches_the_gateway_queue_and_worker(
    password_redis: int, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """The gateway queues a job and a real worker, on the same URL, runs it to the end."""
    query = f"password={PASSWORD}"
    url = str(httpx.URL(f"redis://127.0.0.1:{password_redis}/0", params={"password": PASSWORD}))
    assert query not in url and "?password=" in url  # quoted, as a URL holds it
    queue = f"query-password-{secrets.token_hex(4)}"
    settings = {"FDL_TRAINING_QUEUE": queue}
    with (
        closing(start_worker("worker-query-password", url, data_dir, tmp_path, logs_dir, settings)),
        gateway_running(
            "gateway-query-password", logs_dir, url, None, tmp_path / "models",
            tmp_path / "secrets", **settings,
        ) as gateway,
    ):  # fmt: skip
        spec = {"dataset": "mnist", "model": "mnist_logreg", **MNIST_TINY}
        answer = httpx.post(
            f"{gateway.url}/v1/jobs", json=spec, headers=gateway.admin(), timeout=30
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]

        def ended() -> dict | None:
            record = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=gateway.admin()).json()
            return record if record["status"] in {"succeeded", "failed", "cancelled"} else None

        record = wait_for(ended, 180, f"job {job_id} to end")
        assert record["status"] == "succeeded", record


URLS = [
    "redis://127.0.0.1:6379/0?password=secret",
    "redis://h:1/2?password=p%40ss%2Bw+d&username=bob&socket_timeout=5",
    "redis://:in-userinfo@h/0?password=in-query",  # redis-py: the userinfo's wins
    "redis://h/0?password=&password=second",  # redis-py: the first non-empty one
    "rediss://h/0?username=u",
    "redis://[::1]:6379/0?password=x",
]


@pytest.mark.parametrize("url", URLS)
def test_the_url_means_to_redis_py_what_it_meant_and_kombu_reads_it(url: str) -> None:
    moved = credentials_in_userinfo(url)
    assert "password=" not in moved and "username=" not in moved, moved
    assert redis_parse_url(moved) == redis_parse_url(url)
    wanted = redis_parse_url(url)
    parts = kombu_parse_url(moved)  # raised TypeError for a query password
    assert parts["password"] == wanted.get("password")
    assert parts["userid"] == wanted.get("username")


@pytest.mark.parametrize(
    "url", ["redis://h:6379/0", "redis://:p@h/0", "redis://h/0?Password=x", "unix:///s?password=x"]
)
def test_other_urls_are_left_as_they_are(url: str) -> None:
    assert credentials_in_userinfo(url) == url


def test_every_process_reads_the_userinfo_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FDL_REDIS_URL", "redis://db:6379/3?password=s%3Acret")
    assert CommonSettings(_env_file=None).redis_url == "redis://:s%3Acret@db:6379/3"  # type: ignore[call-arg]
