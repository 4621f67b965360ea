"""One port server for a whole test run (portpicker's), so that test processes running side by
side (pytest-xdist's) never pick the same port, and no picked port is one the kernel may give an
outgoing connection as its source port (the pool lies below the ephemeral range).

Without it, each process picked at random in the ephemeral range and only remembered its own
picks: between a pick and the server's bind, another test process, or any outgoing connection,
could take the port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from harness.procs import wait_for

# Ports below this are left to the machine's own services.
POOL_START = 10_000
POOL_SIZE = 20_000


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def pool() -> str:
    """The ports the server hands out: from POOL_START, up to POOL_SIZE of them, all below the
    ephemeral range."""
    end = min(POOL_START + POOL_SIZE, ephemeral_start()) - 1
    return f"{POOL_START}-{end}"


def start_port_server(log_path: Path) -> subprocess.Popen[bytes] | None:
    """Start portpicker's port server on an abstract socket of this run and point this process
    (and the test processes and servers it starts, which inherit it) at it through
    PORTSERVER_ADDRESS. None where the server's script is missing: ports are then picked as
    before."""
    script = Path(sys.executable).parent / "portserver.py"
    if sys.platform != "linux" or not script.is_file():
        return None
    address = f"@fdl-tests-{os.getpid()}"
    with log_path.open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, str(script), f"--portserver_address={address}",
             f"--portserver_static_pool={pool()}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def answers() -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"the port server exited with {server.returncode}: see {log_path}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(address.replace("@", "\0", 1))
        return True

    wait_for(answers, 30, "the port server")
    os.environ["PORTSERVER_ADDRESS"] = address
    return server


def stop_port_server(server: subprocess.Popen[bytes] | None, log_path: Path) -> None:
    """Stop it; its log (a line per port handed out) is kept only if it had stopped before."""
    if server is None:
        return
    exited = server.poll() is not None
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    if not exited:
        log_path.unlink(missing_ok=True)
