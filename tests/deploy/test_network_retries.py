"""The container builds try a download step again after a passing network fault, and only then.

scripts/network-retries.sh wraps the stand-in bases' bootstrap and every image build in
scripts/test-containers.sh: one failed name lookup of deb.debian.org once failed a whole CI run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.procs import REPO_ROOT

DNS_FAULT = (
    "Err:1 http://deb.debian.org/debian bookworm InRelease\n"
    "  Temporary failure resolving 'deb.debian.org'"
)
PIP_FAULT = "WARNING: Retrying ... ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.org')\")"
BROKEN = 'Error: building at STEP "RUN false": while running runtime: exit status 1'


def run_step(tmp_path: Path, outputs: list[str]) -> tuple[int, str, int]:
    """Run a step that prints outputs[i] on its try i and fails, or succeeds once they run out."""
    counter = tmp_path / "tries"
    counter.write_text("0")
    for index, text in enumerate(outputs):
        (tmp_path / f"out{index}").write_text(text)
    step = tmp_path / "step.sh"
    step.write_text(
        'n=$(cat "$1"); echo $((n + 1)) > "$1"\n'
        '[ -f "$(dirname "$1")/out$n" ] || { echo built; exit 0; }\n'
        'cat "$(dirname "$1")/out$n"; exit 1\n'
    )
    log = tmp_path / "step.log"
    script = (
        f'source scripts/network-retries.sh; with_network_retries "{log}" bash "{step}" "{counter}"'
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "FDL_NETWORK_RETRY_WAIT": "0"},
    )
    return result.returncode, result.stdout + log.read_text(), int(counter.read_text())


@pytest.mark.parametrize("fault", [DNS_FAULT, PIP_FAULT])
def test_a_passing_network_fault_is_tried_again(tmp_path: Path, fault: str) -> None:
    code, output, tries = run_step(tmp_path, [fault])
    assert (code, tries) == (0, 2), output
    assert "network fault on try 1 of 3" in output
    assert "built" in output


def test_a_lasting_network_fault_fails_after_three_tries(tmp_path: Path) -> None:
    code, output, tries = run_step(tmp_path, [DNS_FAULT] * 5)
    assert (code, tries) == (1, 3), output
    assert "network fault on try 3 of 3: " in output
    assert "Temporary failure resolving" in output


def test_any_other_failure_is_returned_at_once(tmp_path: Path) -> None:
    code, output, tries = run_step(tmp_path, [BROKEN])
    assert (code, tries) == (1, 1), output
    assert "network fault" not in output
    assert BROKEN in output
