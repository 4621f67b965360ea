"""`fdl promote --if-version N` sends If-Match "N": a label moved since (by another admin, or an
earlier try whose answer was lost) is left alone, with a one-line error and exit 1 (the
gateway refused the request). The real `fdl` against a real gateway and model server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from fdl.repository_reads import read_labels
from harness.gateway import ADMIN_KEY, Gateway
from harness.procs import REPO_ROOT, VENV_BIN


def fdl(gateway: Gateway, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    env |= {"FDL_URL": gateway.url, "FDL_API_KEY": ADMIN_KEY, "FDL_VAR_DIR": str(tmp)}
    env |= {"COLUMNS": "200"}
    return subprocess.run(
        [str(VENV_BIN / "fdl"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )


def test_promote_if_version(gateway: Gateway, tmp_path: Path) -> None:
    model_dir = Path(gateway.env["FDL_MODEL_DIR"])
    try:
        first = fdl(gateway, tmp_path, "promote", "promo", "1", "--label", "pc-cli")
        assert first.returncode == 0, first.stderr
        moved = fdl(
            gateway, tmp_path, "promote", "promo", "2", "--label", "pc-cli", "--if-version", "1"
        )
        assert moved.returncode == 0, moved.stderr
        assert "pc-cli → version 2 (was version 1)" in moved.stdout
        # Run again as a script retrying it would (or a second admin who saw version 1).
        stale = fdl(
            gateway, tmp_path, "promote", "promo", "3", "--label", "pc-cli", "--if-version", "1"
        )
        assert stale.returncode == 1, stale.stdout + stale.stderr
        lines = stale.stderr.strip().splitlines()
        assert len(lines) == 1, stale.stderr
        assert lines[0].startswith("Error: label 'pc-cli' of model promo points at version 2")
        assert "expected version 1" in lines[0] and "(412 precondition_failed)" in lines[0]
        assert read_labels(model_dir)["promo"]["pc-cli"] == 2
        refused = fdl(gateway, tmp_path, "promote", "promo", "3", "--if-version", "0")
        assert refused.returncode == 2, refused.stderr  # a usage error: no version 0
    finally:
        httpx.delete(
            f"{gateway.url}/v1/models/promo/labels/pc-cli",
            headers=gateway.admin(),
            timeout=60,
        )
