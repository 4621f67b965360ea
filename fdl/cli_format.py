"""How the CLI writes the gateway's values: percentages, statuses, times, and its text as it is."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text

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


def plain(value: Any, style: str = "") -> Text:
    """Text from the gateway (names, ids, messages) as it is: a rich Text is never read as markup,
    so square brackets and backslashes in it are printed, and an unbalanced ``[/]`` cannot end
    the command with a MarkupError (``rich.markup.escape`` drops a backslash before a tag)."""
    return Text(str(value), style=style)


def status(name: str) -> Text:
    """A job status in its colour."""
    return plain(name, STATUS_STYLE.get(name, "white"))


def when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    except (OverflowError, OSError, ValueError):  # far outside the clock's range
        return str(seconds)
