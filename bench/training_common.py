"""Helpers of the training benches: a private Redis-backed job store and worker settings."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fdl.jobs import JobStore  # noqa: E402
from fdl.redis_server import redis_server_argv  # noqa: E402
from fdl.stack import free_port  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("FDL_DATA_DIR", ROOT.parent / "shared" / "data"))


@contextmanager
def private_store() -> Iterator[JobStore]:
    """A throw-away Redis on a free port, polled until it answers."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen(
            redis_server_argv(port, Path(tmp)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        store = JobStore.from_url(f"redis://127.0.0.1:{port}/0")
        deadline = time.monotonic() + 20
        while True:
            try:
                store.ping()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise
                time.sleep(0.05)  # polling interval
        try:
            yield store
        finally:
            proc.terminate()
            proc.wait(10)
