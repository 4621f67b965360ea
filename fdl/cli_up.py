"""What `fdl up` checks before it starts anything: that no other stack holds its var folder, that
nothing a killed stack left running over it is still running (stopped if so), and that the ports
of the gateway and the model server are free (docs/deploy.md, "fdl up")."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fdl.cli_local import port_problem
from fdl.settings import CommonSettings, folder_problem, prepare_var_dir, unmakeable
from fdl.stack import STACK_MARKER, Stack
from fdl.stack_supervisor import STOP_WAIT_S

# Held (flock) by `fdl up` and, across its exec, by supervisord: one stack per var folder.
LOCK_FILE = "fdl-up.lock"
# linux/pidfd.h: pidfd_send_signal to the process group that the pidfd's process leads.
PIDFD_SIGNAL_PROCESS_GROUP = 1 << 2


class StackError(Exception):
    """`fdl up` cannot start; nothing was started."""


# The settings classes of the children that have settings of their own, by name: fdl is the layer
# under api and training, and never imports them (pyproject.toml, import-linter).
CHILD_SETTINGS = ("api.settings:GatewaySettings", "training.settings:WorkerSettings")
# Run with the children's environment: each class read as its child will read it, the gateway's
# key files with it; the first problem printed as one line (never a value), exit status 1.
CHECK_SETTINGS = """
import importlib, sys
from fdl.settings import SETTINGS_ERRORS, WeakKeyError, settings_problem
for target in sys.argv[1:]:
    module, name = target.split(":")
    try:
        settings = getattr(importlib.import_module(module), name)()
        getattr(settings, "check_keys", lambda: None)()
    except (*SETTINGS_ERRORS, WeakKeyError) as error:
        sys.exit(settings_problem(error))
"""


def check_folder(variable: str, path: Path, parent_must_exist: bool = False) -> None:
    """Raises:
    StackError: ``path`` is a file or FIFO, or (``parent_must_exist``) it and its parent folder
        are both missing (a volume not mounted), or it is missing and cannot be made (under a
        file, in a read-only folder)."""
    if problem := folder_problem(path, parent_must_exist) or unmakeable(path):
        raise StackError(f"{variable}: {problem}")


def check_child_settings(stack: Stack) -> None:
    """The gateway's and the worker's own settings, as they will read them: one that is invalid
    would make its child exit at every start until supervisord gives it up.

    Raises:
        StackError: the first invalid setting, by its variable, and why.
    """
    # -P: the folder `fdl up` runs in is not put first on sys.path (as -c does), so a user's
    # api.py or fdl.py there is neither imported in place of ours nor run.
    result = subprocess.run(
        [sys.executable, "-P", "-c", CHECK_SETTINGS, *CHILD_SETTINGS],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise StackError(lines[-1])


def claim_var_dir(var_dir: Path) -> int:
    """Lock ``var_dir`` for this stack; the lock's descriptor is inherited by supervisord (it
    replaces this process) and released when it exits, however it ends.

    A second stack over the same folder would start a second Redis on the first one's data and
    overwrite its var/redis_url.

    Raises:
        StackError: another `fdl up` holds the folder, or it cannot be made or written.
    """
    if problem := prepare_var_dir(var_dir):
        raise StackError(problem)
    path = var_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise StackError(f"FDL_VAR_DIR: {path} cannot be written ({error.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        pid = f" (supervisord pid {holder})" if holder.isdigit() else ""
        raise StackError(
            f"another `fdl up`{pid} is running over {var_dir}: stop it first (Ctrl-C in its "
            "terminal), or give this one its own FDL_VAR_DIR and ports"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # the pid supervisord keeps after the exec
    os.set_inheritable(fd, True)
    return fd


def check_ports(settings: CommonSettings) -> None:
    """The gateway's and the model server's ports must be free, and each its own, or the child
    that needs one would fail to start again and again under supervisord.

    Raises:
        StackError: naming each port in use and its setting, a setting that is no port (0 would
            be a random one, that the CLI and the gateway cannot find), or two settings of one
            port.
    """
    wanted = [
        (settings.gateway_host, settings.gateway_port, "FDL_GATEWAY_PORT", "the gateway"),
        (settings.serving_host, settings.serving_grpc_port, "FDL_SERVING_GRPC_PORT", "gRPC"),
        (settings.serving_host, settings.serving_rest_port, "FDL_SERVING_REST_PORT", "REST"),
    ]
    # The same check as the CLI's default URL makes of FDL_GATEWAY_PORT (fdl.cli_local).
    bad = [
        f"{variable}: {problem}"
        for _host, port, variable, _what in wanted
        if (problem := port_problem(port)) is not None
    ]
    if bad:
        raise StackError(f"{'; '.join(bad)}: choose another with the setting")
    # Refused whatever the hosts: the model server listens on every interface when it is the
    # real tensorflow_model_server, and its two ports share one host.
    shared = [
        f"{variable} and {other} are both {port}"
        for index, (_host, port, variable, _what) in enumerate(wanted)
        for _other_host, other_port, other, _other_what in wanted[index + 1 :]
        if port == other_port
    ]
    if shared:
        raise StackError(
            f"{'; '.join(shared)}: the gateway, the model server's gRPC API and its REST API "
            "each need a port of their own; choose another with one of these settings"
        )
    taken = [
        f"{port} ({variable}, {what})"
        for host, port, variable, what in wanted
        if not listenable(port, host)
    ]
    if taken:
        raise StackError(
            f"{'ports' if len(taken) > 1 else 'port'} {', '.join(taken)} already in use on "
            "this machine: another `fdl up`, or a stack left running? Stop it, or choose free "
            "ports with these settings"
        )


def listenable(port: int, host: str) -> bool:
    """Whether a server could listen on ``host:port`` now (SO_REUSEADDR as servers set it, so a
    port a stopped server left in TIME_WAIT counts as free). A host that is not this machine's
    is left to the server to report."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.errno != errno.EADDRINUSE
        return True


@dataclass(frozen=True)
class Leftover:
    """A process of a stack whose supervisord was killed (SIGKILL leaves its children running)."""

    pid: int
    started: str  # the start time in /proc/PID/stat: a reused pid is another process
    command: str

    @property
    def redis(self) -> bool:
        return "redis-server" in self.command

    def __str__(self) -> str:
        """Its program's name: the script's for a Python one (fdl-gateway, fdl-worker)."""
        names = [word.rsplit("/", 1)[-1] for word in self.command.split()[:2]] or ["?"]
        name = names[-1] if names[0].startswith("python") else names[0]
        return f"{name} (pid {self.pid})"


def leftovers(var_dir: Path) -> list[Leftover]:
    """What a stack over ``var_dir`` left running: the processes whose environment holds its
    STACK_MARKER, and a Redis working in ``var_dir``/redis (Redis overwrites its environment
    with its process title). Call it holding the folder's lock, so that no live stack owns them.
    Linux only (/proc): elsewhere none are found."""
    marker = f"{STACK_MARKER}={var_dir}".encode()
    redis_dir = str(var_dir / "redis")
    ours = {os.getpid(), os.getppid()}
    found: list[Leftover] = []
    for entry in Path("/proc").glob("[0-9]*"):
        if int(entry.name) in ours:
            continue
        try:
            started = _start_time(entry.name)
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            in_redis_dir = os.readlink(entry / "cwd") == redis_dir
            if _start_time(entry.name) != started:  # the pid was reused while it was read
                continue
        except OSError:  # gone, a zombie, or another user's
            continue
        if marker in environ or (in_redis_dir and "redis-server" in command):
            found.append(Leftover(int(entry.name), started, command.strip()))
    return found


def _start_time(pid: str) -> str:
    stat = (Path("/proc") / pid / "stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in (...) may hold spaces


def _running(process: Leftover) -> bool:
    try:
        stat = (Path("/proc") / str(process.pid) / "stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and fields[19] == process.started


def stop_leftovers(found: list[Leftover]) -> None:
    """Stop them as the stack's own stop would: SIGTERM to each one's process group (a
    Celery worker's pool with it), SIGKILL after STOP_WAIT_S; Redis last, so that it writes its
    append-only file after the others have stopped writing to it.

    Raises:
        StackError: one of them outlived SIGKILL.
    """
    for batch in ([p for p in found if not p.redis], [p for p in found if p.redis]):
        for sig, wait_s in ((signal.SIGTERM, STOP_WAIT_S), (signal.SIGKILL, 5.0)):
            for process in batch:
                _signal(process, sig)
            deadline = time.monotonic() + wait_s
            while any(_running(p) for p in batch) and time.monotonic() < deadline:
                time.sleep(0.1)  # they are not our children: no wait() tells when they exit
            batch = [p for p in batch if _running(p)]
        if batch:
            raise StackError(f"could not stop {', '.join(map(str, batch))}: stop it yourself")


def _signal(process: Leftover, sig: signal.Signals) -> None:
    """Signal it, or its process group if it leads one, unless its pid now names another
    process: through a pidfd where Linux has them (the signal then fails if the process has
    exited, even if its pid was reused since), else right after a last check of its start time."""
    try:
        pidfd: int | None = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # not Linux 5.3 or later
        pidfd = None
    try:
        # Checked once the pidfd is open: then the pidfd holds this process, not a reuser.
        if not _running(process):
            return
        group = os.getpgid(process.pid) == process.pid
        if pidfd is not None and _pidfd_signal(pidfd, sig, group):
            return
        if _running(process):
            (os.killpg if group else os.kill)(process.pid, sig)
    except (ProcessLookupError, PermissionError):  # gone; or another user's: reported after
        pass
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd_signal(pidfd: int, sig: signal.Signals, group: bool) -> bool:
    """Whether the signal went through ``pidfd``: False if this Linux (before 6.9) cannot signal
    a process group so."""
    try:
        signal.pidfd_send_signal(pidfd, sig, None, PIDFD_SIGNAL_PROCESS_GROUP if group else 0)
    except OSError as error:
        if group and error.errno == errno.EINVAL:
            return False
        raise
    return True
