"""`fdl up` after a killed one (SIGKILL: supervisord dies, its children keep running): the new
stack stops what the dead one left over the same var folder before it starts anything, so no
second Redis ever writes the first one's append-only file, and Redis keeps its port and data.
Nothing else is stopped: not another folder's Redis or stack, nor a process that took the pid of
a leftover that exited meanwhile."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from fdl.stack import STACK_MARKER
from harness.procs import REPO_ROOT, Process, free_port, wait_for, wait_http
from harness.redis import RestartableRedis
from harness.stack import stack_env, stop_and_check_no_orphans

# A pid namespace of its own, with its own /proc, where the test sets the next pid.
UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]


def redis_servers_in(data_dir: Path) -> list[psutil.Process]:
    """Every redis-server working in ``data_dir`` (Redis moves into its --dir)."""
    found = []
    for process in psutil.process_iter():
        try:
            if "redis-server" in process.name() and process.cwd() == str(data_dir):
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def other_redis(tmp_path: Path, logs_dir: Path) -> Iterator[RestartableRedis]:
    """A Redis of no stack over this var folder: its own port, working in a folder whose name
    extends the var folder's."""
    server = RestartableRedis(tmp_path / "var-other" / "redis", logs_dir, "redis-of-no-stack")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def other_stack_process(tmp_path: Path, logs_dir: Path) -> Iterator[Process]:
    """A process of a stack over another var folder, whose name extends this one's."""
    env = {STACK_MARKER: str(tmp_path.resolve() / "var-other")}
    process = Process("other-stack-sleep", ["sleep", "600"], logs_dir, env=env, cwd=tmp_path)
    try:
        yield process
    finally:
        process.stop()


def start(name: str, env: dict[str, str], tmp: Path, logs_dir: Path) -> Process:
    """`fdl up`, with its gateway answering and its Redis listening."""
    process = Process(name, ["fdl", "up"], logs_dir, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{env['FDL_GATEWAY_PORT']}/healthz"
    wait_http(url, f"{name}'s gateway", process, timeout=120, interval=0.2)
    client = redis.Redis.from_url((tmp / "var" / "redis_url").read_text().strip())
    try:
        wait_for(client.ping, 30, f"{name}'s Redis", check=process.ensure_alive)
    finally:
        client.close()
    return process


def test_fdl_up_stops_what_a_killed_stack_left_running(
    tmp_path: Path, logs_dir: Path, other_redis: RestartableRedis, other_stack_process: Process
) -> None:
    env = stack_env(tmp_path, tmp_path / "data")
    var = tmp_path / "var"
    first = start("fdl-up-to-kill", env, tmp_path, logs_dir)
    left = psutil.Process(first.pid).children(recursive=True)
    second: Process | None = None
    try:
        redis_url = (var / "redis_url").read_text().strip()
        client = redis.Redis.from_url(redis_url)
        client.set("written-before-the-kill", "kept")
        client.close()
        os.kill(first.pid, signal.SIGKILL)  # supervisord only: its children live on
        first.popen.wait(10)
        assert all(child.is_running() for child in left)
        assert len(redis_servers_in(var / "redis")) == 1

        # Other ports for the gateway and the model server, as the "port in use" refusal
        # advises: only the Redis of the var folder could clash now.
        ports = ("FDL_GATEWAY_PORT", "FDL_SERVING_GRPC_PORT", "FDL_SERVING_REST_PORT")
        env |= {name: str(free_port()) for name in ports}
        second = start("fdl-up-after-kill", env, tmp_path, logs_dir)

        servers = redis_servers_in(var / "redis")
        assert servers == [redis_server := servers[0]], "two Redis servers on one data folder"
        assert redis_server in psutil.Process(second.pid).children()
        _gone, alive = psutil.wait_procs(left, timeout=5)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        assert (var / "redis_url").read_text().strip() == redis_url  # the same port
        client = redis.Redis.from_url(redis_url)
        assert client.get("written-before-the-kill") == b"kept"
        client.close()
        log = second.log_tail(50_000)
        assert "stopping what a killed `fdl up` left running" in log

        assert other_redis.process is not None and other_redis.process.alive()
        client = redis.Redis.from_url(other_redis.url)
        assert client.ping()
        client.close()
        assert other_stack_process.alive()
        for pid in (other_redis.process.pid, other_stack_process.pid):
            assert f"pid {pid})" not in log
    finally:
        for process in left:  # whatever the new stack did not stop
            with contextlib.suppress(psutil.Error):
                process.kill()
        first.stop()
        if second is not None:
            stop_and_check_no_orphans(second)


def pid_namespaces() -> bool:
    """Whether this machine lets a process have a pid namespace of its own (unshare)."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = [*UNSHARE, "sh", "-c", "echo 1 > /proc/sys/kernel/ns_last_pid"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.parametrize("moment", ["scan", "signal", "signal-without-pidfd"])
def test_a_process_that_took_a_leftovers_pid_is_left_alone(moment: str, tmp_path: Path) -> None:
    """A leftover exits and its pid goes to an unrelated process while `fdl up` reads what it
    is ("scan"), or between `fdl up`'s last look at it and its signal ("signal"; as on a Linux
    without pidfds, "signal-without-pidfd"): the unrelated process lives."""
    if not pid_namespaces():
        pytest.skip("platform: this machine gives no process a pid namespace of its own (unshare)")
    var = str(tmp_path.resolve() / "var")
    code = f"from {__name__} import reuse_pid_while; reuse_pid_while({moment!r}, {var!r})"
    argv = [*UNSHARE, sys.executable, "-c", code]
    result = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def reuse_pid_while(moment: str, var: str) -> None:
    """Run as pid 1 of a pid namespace: a leftover of a stack over ``var`` whose pid goes to an
    unrelated `sleep` at ``moment`` (os.readlink of its cwd during the scan, os.getpgid before
    the signal); exits 1 if `fdl up` signalled that `sleep`. The namespace ends with it."""
    from fdl import cli_up

    leftover = subprocess.Popen(
        ["sleep", "600"], env={**os.environ, STACK_MARKER: var}, start_new_session=True
    )
    reusers: list[subprocess.Popen[bytes]] = []

    def reuse(pid: int) -> None:
        if pid == leftover.pid and not reusers:
            reusers.append(give_pid_away(leftover))

    readlink, getpgid = os.readlink, os.getpgid

    def readlink_reusing(path: str | os.PathLike[str]) -> str:
        if str(path) == f"/proc/{leftover.pid}/cwd":
            reuse(leftover.pid)
        return readlink(path)

    def getpgid_reusing(pid: int) -> int:
        reuse(pid)
        return getpgid(pid)

    def no_pidfds(pid: int) -> int:
        raise OSError(errno.ENOSYS, "pidfd_open: not on this Linux")

    with pytest.MonkeyPatch.context() as patch:
        if moment == "scan":
            patch.setattr(os, "readlink", readlink_reusing)
        else:
            patch.setattr(os, "getpgid", getpgid_reusing)
        if moment == "signal-without-pidfd":
            patch.setattr(os, "pidfd_open", no_pidfds)
        found = cli_up.leftovers(Path(var))
        cli_up.stop_leftovers(found)
    if not reusers:
        sys.exit(f"the leftover's pid was never reused ({moment}): found {found}")
    if signalled(reusers[0]):
        sys.exit(f"`fdl up` signalled the process that took pid {leftover.pid}: found {found}")


def signalled(process: subprocess.Popen[bytes]) -> bool:
    """Whether ``process`` has exited, or has a signal pending: it blocks SIGTERM, so a SIGTERM
    sent to it shows however soon this looks."""
    if process.poll() is not None:
        return True
    status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
    pending = [line.split(":")[1] for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(int(mask, 16) for mask in pending)


def give_pid_away(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Kill ``process`` and start an unrelated `sleep` (a session leader that blocks SIGTERM)
    under its pid, at a later clock tick so that /proc tells them apart: the pid namespace's last
    pid is set."""
    started = int(Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    wait_for(
        lambda: time.clock_gettime(time.CLOCK_BOOTTIME) * ticks_per_s > started + 2,
        5,
        "a clock tick",
        interval=0.005,
    )
    process.kill()
    process.wait(10)
    Path("/proc/sys/kernel/ns_last_pid").write_text(f"{process.pid - 1}\n")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited across the exec
    try:
        reuser = subprocess.Popen(["sleep", "600"], start_new_session=True)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    if reuser.pid != process.pid:
        raise RuntimeError(f"pid {process.pid} went to no new process ({reuser.pid} did)")
    return reuser
