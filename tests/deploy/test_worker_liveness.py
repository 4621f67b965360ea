"""The worker's liveness check, the exact commands of deploy/k8s/base/worker.yaml (livenessProbe)
and deploy/compose.yaml (the worker's healthcheck), against a real worker and a real Redis.

It passes while the worker answers, and while Redis is away, hangs or refuses (a failover, a
restart, a full disk): a restart of every worker cannot mend Redis and killed their running jobs,
which pause meanwhile and go on once it is back. It fails, within the probe's timeoutSeconds, only
when Redis answers and the worker does not (stopped here with SIGSTOP, or killed). Before, the
liveness check was Celery's plain `inspect ping`, which failed whenever Redis did. It ends within
its bound (training.probe.bound_s) also when Redis hangs in the middle of it. Settings that no
restart of Redis would mend fail it with one line: test_worker_liveness_settings.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.procs import REPO_ROOT, VENV_BIN, wait_for
from harness.redis import RestartableRedis
from harness.worker import MNIST_TINY, Worker, start_worker, write_stuck_data
from tests.chaos.redis_refusals import ALL_REFUSALS
from tests.deploy.liveness_command import COMMANDS, PROBE_TIMEOUT_S, probe
from training.probe import bound_s, node_name


@pytest.fixture(scope="module")
def worker(
    redis_server: RestartableRedis,
    data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    logs_dir: Path,
) -> Iterator[Worker]:
    root = tmp_path_factory.mktemp("liveness-worker")
    # MNIST, and `stuck`, whose reading blocks on a FIFO: a job that keeps the pool process busy.
    data = write_stuck_data(data_dir, root / "data")
    started = start_worker("liveness-worker", redis_server.url, data, root, logs_dir)
    try:
        yield started
    finally:
        started.process.signal(signal.SIGCONT)
        started.close()


def answered(redis_server: RestartableRedis, worker: Worker) -> bool:
    """The worker answers its liveness check again (after an outage, before the next test)."""
    worker.process.ensure_alive()
    result, _ = probe(redis_server, "k8s")
    return result.returncode == 0 and "pong" in result.stdout


def assert_passes_for_redis(redis_server: RestartableRedis, worker: Worker, which: str) -> None:
    """Exit 0 within the probe's timeout, with one line that blames Redis, the worker alive."""
    result, seconds = probe(redis_server, which)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert seconds < PROBE_TIMEOUT_S, (seconds, output)
    (line,) = result.stdout.strip().splitlines()
    assert "Redis at 127.0.0.1" in line and "is away or refuses" in line, output
    assert "passing" in line and "pong" not in line
    worker.process.ensure_alive()


def test_the_manifests_run_the_probe() -> None:
    assert COMMANDS["k8s"][0] == "fdl-worker-probe"
    assert COMMANDS["compose"][0] == "fdl-worker-probe"


@pytest.mark.parametrize("which", sorted(COMMANDS))
def test_passes_while_the_worker_answers(
    redis_server: RestartableRedis, worker: Worker, which: str
) -> None:
    result, seconds = probe(redis_server, which)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pong" in result.stdout and seconds < PROBE_TIMEOUT_S


@pytest.mark.parametrize("which", sorted(COMMANDS))
def test_passes_while_redis_is_down(
    redis_server: RestartableRedis, worker: Worker, which: str
) -> None:
    redis_server.stop()
    try:
        assert_passes_for_redis(redis_server, worker, which)
    finally:
        redis_server.start()
    wait_for(lambda: answered(redis_server, worker), 90, "the worker back on Redis", interval=1)


def test_passes_while_redis_hangs(redis_server: RestartableRedis, worker: Worker) -> None:
    """Redis stopped with SIGSTOP: connections open, nothing answers (the PING times out)."""
    assert redis_server.process is not None
    redis_server.process.signal(signal.SIGSTOP)
    try:
        assert_passes_for_redis(redis_server, worker, "k8s")
    finally:
        redis_server.process.signal(signal.SIGCONT)
    wait_for(lambda: answered(redis_server, worker), 90, "the worker back on Redis", interval=1)


@pytest.mark.parametrize("refusal", sorted(ALL_REFUSALS))
def test_passes_while_redis_refuses_writes(
    redis_server: RestartableRedis, worker: Worker, refusal: str
) -> None:
    """MISCONF (a full disk), READONLY (a failover's old master), OOM (maxmemory)."""
    with ALL_REFUSALS[refusal](redis_server):
        assert_passes_for_redis(redis_server, worker, "k8s")
    wait_for(lambda: answered(redis_server, worker), 90, "the worker to answer again", interval=1)


@pytest.mark.parametrize("which", sorted(COMMANDS))
def test_fails_for_a_hung_worker_while_redis_answers(
    redis_server: RestartableRedis, worker: Worker, which: str
) -> None:
    worker.process.signal(signal.SIGSTOP)
    try:
        result, seconds = probe(redis_server, which)
    finally:
        worker.process.signal(signal.SIGCONT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert seconds < PROBE_TIMEOUT_S, seconds
    assert "did not answer" in result.stderr and "hung or gone" in result.stderr
    wait_for(lambda: answered(redis_server, worker), 60, "the worker to answer again", interval=1)


def test_ends_within_its_bound_when_redis_hangs_during_the_ping_of_the_worker(
    redis_server: RestartableRedis, worker: Worker
) -> None:
    """The worker stopped; Redis stopped (SIGSTOP) as soon as the probe waits for the worker's
    reply (its BRPOP of the reply queue, seen on MONITOR): every later read hangs. The probe
    ends within bound_s of its first command, Redis blamed. Before, only the Celery step had a
    deadline, and the closing of its connection and the second PING waited 2 s each after it."""
    args = ("--timeout", "1", "--redis-timeout", "2")
    bound = bound_s(1, 2)
    env = {**os.environ, "FDL_REDIS_URL": redis_server.url}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    assert redis_server.process is not None
    monitor = redis.Redis(port=redis_server.port, socket_timeout=PROBE_TIMEOUT_S)
    worker.process.signal(signal.SIGSTOP)
    try:
        with monitor.monitor() as commands:
            running = subprocess.Popen(
                [*COMMANDS["k8s"], *args], env=env, cwd=REPO_ROOT, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            first = None
            while True:  # the stopped worker sends nothing: these are the probe's commands
                command = commands.next_command()["command"]
                first = first or time.monotonic()
                if command.startswith("BRPOP ") and "reply.celery.pidbox" in command:
                    break
            redis_server.process.signal(signal.SIGSTOP)
        stdout, stderr = running.communicate(timeout=bound + 30)
        seconds = time.monotonic() - first
    finally:
        redis_server.process.signal(signal.SIGCONT)
        worker.process.signal(signal.SIGCONT)
    assert running.returncode == 0, stdout + stderr
    assert seconds < bound + 1, (seconds, bound, stdout + stderr)
    assert "is away or refuses (no PONG within 2 s)" in stdout, stdout + stderr
    wait_for(lambda: answered(redis_server, worker), 90, "the worker back on Redis", interval=1)


def test_passes_while_the_worker_runs_a_job(redis_server: RestartableRedis, worker: Worker) -> None:
    """A job in the worker's pool process, blocked reading its data: the worker's main process
    answers the ping meanwhile."""
    fifo = next((worker.model_dir.parent / "data" / "stuck").rglob("*-fifo.png"))
    job = worker.submit(model="mnist_logreg", dataset="stuck", **MNIST_TINY)
    try:
        worker.wait_status(job, {"running"}, timeout=90)
        result, _ = probe(redis_server, "k8s")
    finally:
        # Open the FIFO for writing once the job reads it, and close it: the job reads an empty
        # image, fails, and leaves the worker free.
        os.close(wait_for(lambda: open_for_writing(fifo), 90, "the job to read the FIFO"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{node_name(None)}: pong"
    assert worker.wait_done(job, timeout=90)["status"] == "failed"


def open_for_writing(fifo: Path) -> int | None:
    """A descriptor of ``fifo`` open for writing, once a reader has it open (None before)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


def test_the_destination_is_named_as_the_worker_n_and_a_killed_worker_fails(
    redis_server: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """A worker started with `-n worker2@%h` (README): --destination takes what -n takes (or
    CELERY_WORKER_HOSTNAME, as the worker reads it); once the worker is killed, the probe fails."""
    node = f"worker2@{socket.gethostname()}"
    second = start_worker(
        "liveness-worker2",
        redis_server.url,
        data_dir,
        tmp_path,
        logs_dir,
        args=["-n", "worker2@%h"],
    )
    try:
        wait_for(
            lambda: second.app.control.ping(destination=[node], timeout=0.5), 60, f"{node} ready"
        )
        quick = ("--timeout", "2")
        for args, env in (
            (("--destination", "worker2@%h"), {}),
            (("--destination", node), {}),
            ((), {"CELERY_WORKER_HOSTNAME": "worker2@%h"}),
        ):
            result, _ = probe(redis_server, "k8s", args=(*args, *quick), env=env)
            assert result.returncode == 0, (args, env, result.stdout + result.stderr)
            assert result.stdout.strip() == f"{node}: pong", (args, env)
        second.process.signal(signal.SIGKILL)
        second.process.popen.wait(30)
        result, _ = probe(redis_server, "k8s", args=("--destination", "worker2@%h", *quick))
    finally:
        second.close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{node} did not answer a ping within 2 s" in result.stderr
    assert "hung or gone" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("name", ["worker2@%h", "worker2", "w@%n.example", "a@b", None])
def test_node_names_expand_as_the_worker_expands_its_n(name: str | None) -> None:
    """Celery's own -n/--hostname option of the worker, the one fdl-worker passes on."""
    from celery.bin.worker import HOSTNAME, worker

    option = next(p for p in worker.params if p.name == "hostname")
    expected = option.default if name is None else HOSTNAME.convert(name, None, None)
    assert node_name(name) == expected
