"""The Redis that `fdl up` starts for itself requires a password: another local user of a shared
machine cannot read, forge, cancel or queue jobs through it. The password is made once, kept in
var/redis_password (0600, like var/api_key) and given to redis-server in a config file (0600),
never on a command line (every local user reads those: /proc/<pid>/cmdline, `ps`);
var/redis_url (0600) carries it; nothing `fdl up` prints shows it. Before, the private Redis had
no password and `--protected-mode no`."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis

from harness.stack import RunningStack, fdl_up, stack_env, submit_job, wait_job

pytestmark = pytest.mark.slow

REDIS_PASSWORD_FILE = "redis_password"
REDIS_URL_FILE = "redis_url"
JOB = {
    "model": "mnist_logreg",
    "epochs": 1,
    "batch_size": 64,
    "max_train_examples": 600,
    "max_test_examples": 200,
    "validation_split": 100,
}


@dataclass
class FirstRun:
    """What the first `fdl up` over the folder left: its password, URL and a finished job."""

    password: str
    url: str
    job: dict[str, object]
    env: dict[str, str]
    root: Path
    log: Path


def read(var_dir: Path, name: str) -> str:
    return (var_dir / name).read_text().strip()


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, logs_dir: Path) -> FirstRun:
    """A first `fdl up` (a new password), a job run through it, then the stack stopped."""
    root = tmp_path_factory.mktemp("redis-password")
    env = stack_env(root, data_dir)
    with fdl_up("fdl-up-password-1", env, logs_dir, root / "models", root / "var") as stack:
        job = wait_job(stack, submit_job(stack, JOB))
        assert job["status"] == "succeeded", job
        password_file = stack.var_dir / REDIS_PASSWORD_FILE
        return FirstRun(
            password_file.read_text().strip() if password_file.exists() else "",
            read(stack.var_dir, REDIS_URL_FILE),
            job,
            env,
            root,
            stack.process.log_path,
        )


@pytest.fixture(scope="module")
def stack(first_run: FirstRun, logs_dir: Path) -> Iterator[RunningStack]:
    """`fdl up` again over the same folder (the same Redis data, the same var files)."""
    root = first_run.root
    with fdl_up(
        "fdl-up-password-2", first_run.env, logs_dir, root / "models", root / "var"
    ) as running:
        yield running


def redis_child(stack: RunningStack) -> psutil.Process:
    children = psutil.Process(stack.process.pid).children(recursive=True)
    found = [child for child in children if "redis-server" in child.name()]
    assert len(found) == 1, found
    return found[0]


def test_a_client_without_the_password_is_refused(stack: RunningStack) -> None:
    parts = urlsplit(read(stack.var_dir, REDIS_URL_FILE))
    assert parts.hostname and parts.port
    # As any local program speaks to it, no client library between.
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw:
        raw.sendall(b"PING\r\nKEYS *\r\n")
        replies = b""
        while replies.count(b"\r\n") < 2:
            chunk = raw.recv(4096)
            assert chunk, replies
            replies += chunk
    assert replies.startswith(b"-NOAUTH "), replies
    assert replies.split(b"\r\n")[1].startswith(b"-NOAUTH "), replies
    for password in (None, "not-the-password"):
        client = redis.Redis(host=parts.hostname, port=parts.port, password=password)
        try:
            with pytest.raises(redis.AuthenticationError):
                client.keys("*")
        finally:
            client.close()


def test_the_url_file_carries_the_password_and_connects(stack: RunningStack) -> None:
    password = read(stack.var_dir, REDIS_PASSWORD_FILE)
    assert len(password) >= 32
    url = read(stack.var_dir, REDIS_URL_FILE)
    port = urlsplit(url).port
    assert url == f"redis://:{password}@127.0.0.1:{port}/0"
    assert stack.env.get("FDL_REDIS_URL") == ""  # fdl up started its own
    client = redis.Redis.from_url(url)
    try:
        assert client.ping()
    finally:
        client.close()


def test_the_secret_files_are_0600(stack: RunningStack) -> None:
    var = stack.var_dir
    for name in (REDIS_PASSWORD_FILE, REDIS_URL_FILE, "redis.conf", "api_key"):
        assert mode(var / name) == 0o600, name
    config = (var / "redis.conf").read_text()
    assert f'requirepass "{read(var, REDIS_PASSWORD_FILE)}"' in config.splitlines()


def test_the_password_is_on_no_command_line(stack: RunningStack) -> None:
    password = read(stack.var_dir, REDIS_PASSWORD_FILE)
    # redis-server's argv as supervisord runs it (Redis rewrites its own title once started).
    config = (stack.var_dir / "supervisord.conf").read_text()
    command = next(line for line in config.splitlines() if "redis-server" in line)
    assert str(stack.var_dir / "redis.conf") in command and password not in config
    assert redis_child(stack).is_running()
    seen = 0
    for process in psutil.process_iter():
        try:  # as any local user reads it
            line = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        seen += 1
        assert password.encode() not in line, (process.pid, line)
    assert seen > 4  # fdl up's supervisord, its children, this test


def test_the_password_is_never_printed(stack: RunningStack, first_run: FirstRun) -> None:
    password = read(stack.var_dir, REDIS_PASSWORD_FILE)
    port = urlsplit(read(stack.var_dir, REDIS_URL_FILE)).port
    for log in (first_run.log, stack.process.log_path):  # the banner, every child's output
        output = log.read_text()
        assert password not in output, log
        assert f"Redis redis://:***@127.0.0.1:{port}/0 (private, " in output, output
    assert password not in (stack.var_dir / "supervisord.log").read_text()


def test_a_restart_keeps_the_password_and_the_jobs(
    stack: RunningStack, first_run: FirstRun
) -> None:
    assert read(stack.var_dir, REDIS_PASSWORD_FILE) == first_run.password
    assert read(stack.var_dir, REDIS_URL_FILE) == first_run.url  # same password, same port
    job_id = str(first_run.job["id"])
    assert wait_job(stack, job_id, timeout=30) == first_run.job
