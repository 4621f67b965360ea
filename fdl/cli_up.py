"""What `fdl up` checks before it starts anything: that no other stack holds its var folder,
and that the ports of the gateway and the model server are free (docs/deploy.md, "fdl up")."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from fdl.settings import CommonSettings

# Held (flock) by `fdl up` and, across its exec, by supervisord: one stack per var folder.
LOCK_FILE = "fdl-up.lock"


class StackError(Exception):
    """`fdl up` cannot start; nothing was started."""


def claim_var_dir(var_dir: Path) -> int:
    """Lock ``var_dir`` for this stack; the lock's descriptor is inherited by supervisord (it
    replaces this process) and released when it exits, however it ends.

    A second stack over the same folder would start a second Redis on the first one's data and
    overwrite its var/redis_url.

    Raises:
        StackError: another `fdl up` holds the folder.
    """
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
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
    """The gateway's and the model server's ports must be free, or the child that needs one
    would fail to start again and again under supervisord.

    Raises:
        StackError: naming each port in use and its setting.
    """
    wanted = [
        (settings.gateway_host, settings.gateway_port, "FDL_GATEWAY_PORT", "the gateway"),
        (settings.serving_host, settings.serving_grpc_port, "FDL_SERVING_GRPC_PORT", "gRPC"),
        (settings.serving_host, settings.serving_rest_port, "FDL_SERVING_REST_PORT", "REST"),
    ]
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
