"""How the CLI writes the gateway's values: percentages, statuses, times."""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape

STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def pct(value: Any) -> str:
    """A fraction as a percentage; a value that is not a number as it is."""
    if value is None:
        return "-"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    return f"{value * 100:.2f}%"


def status(name: str) -> str:
    """A job status in its colour (rich markup)."""
    return f"[{STATUS_STYLE.get(name, 'white')}]{escape(name)}[/]"


def when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    except (OverflowError, OSError, ValueError):  # far outside the clock's range
        return str(seconds)
