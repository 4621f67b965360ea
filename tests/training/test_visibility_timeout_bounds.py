"""FDL_VISIBILITY_TIMEOUT_S is a whole number of seconds from 60 to 365 days: a larger one never
had a message redelivered, and past about 1e308 stopped the real worker at start with
``OverflowError`` (kombu computes with it as a float); now refused in one line, as every
invalid setting of the worker is."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdl.settings import settings_problem
from tests.training.test_worker_settings import run_worker
from training.settings import MAX_VISIBILITY_TIMEOUT_S, WorkerSettings

HUGE = str(10**400)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (str(MAX_VISIBILITY_TIMEOUT_S + 1), "Input should be less than or equal to 31536000"),
        (str(10**12), "Input should be less than or equal to 31536000"),
        (HUGE, "Input should be less than or equal to 31536000"),
        ("inf", "Input should be a valid integer"),
        ("0", "Input should be greater than or equal to 60"),
        ("-5", "Input should be greater than or equal to 60"),
    ],
    ids=["a-year-and-a-second", "1e12", "1e400", "inf", "zero", "negative"],
)
def test_the_visibility_timeout_is_bounded(
    value: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FDL_VISIBILITY_TIMEOUT_S", value)
    with pytest.raises(ValueError) as caught:
        WorkerSettings(_env_file=None, redis_url="redis://unused")  # type: ignore[call-arg]
    line = settings_problem(caught.value)
    assert line.startswith(f"FDL_VISIBILITY_TIMEOUT_S: {reason}"), line


def test_a_year_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FDL_VISIBILITY_TIMEOUT_S", str(MAX_VISIBILITY_TIMEOUT_S))
    settings = WorkerSettings(_env_file=None, redis_url="redis://unused")  # type: ignore[call-arg]
    assert settings.visibility_timeout_s == 365 * 86400
    # Longer than the longest run a worker allows.
    assert MAX_VISIBILITY_TIMEOUT_S > 30 * 86400 + 86400


def test_a_huge_one_stops_the_real_worker_in_one_line(tmp_path: Path) -> None:
    result = run_worker(tmp_path, FDL_VISIBILITY_TIMEOUT_S=HUGE)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr == (
        "fdl-worker: FDL_VISIBILITY_TIMEOUT_S: Input should be less than or equal to 31536000\n"
    ), output
