"""Processes that folder permissions bind, even when the tests run as root: root reads a
``chmod 000`` folder, the images' uid 10001 does not."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def unprivileged() -> list[str]:
    """A prefix for a command that permissions bind: nothing when the tests are not root; as root,
    ``setpriv`` (util-linux) keeping the user but dropping ``CAP_DAC_OVERRIDE`` and
    ``CAP_DAC_READ_SEARCH``, so the process still owns the tests' files but a folder with mode 000
    is closed to it. Skips when neither can be had."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("platform: running as root without setpriv: permissions cannot deny a process")
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps=-all"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"platform: setpriv cannot drop capabilities here: {probe.stderr.strip()}")
    return prefix


@contextmanager
def closed(path: Path) -> Iterator[Path]:
    """``path`` with mode 000 (nobody may list or enter it) while inside; its mode back after."""
    mode = path.stat().st_mode & 0o7777
    path.chmod(0)
    try:
        yield path
    finally:
        path.chmod(mode)
