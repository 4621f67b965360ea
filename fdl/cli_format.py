"""How the CLI writes the gateway's values: percentages, statuses, times, and its text as it is,
save for the control characters a terminal would obey."""

from __future__ import annotations

import re
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


# C0 controls, DEL and C1 controls (0x9b is a CSI on its own): rich's Text drops only BEL, BS,
# VT, FF and CR, so ESC and the rest would reach the terminal (a title, a cursor move, an OSC 8
# link or an OSC 52 clipboard write). A message keeps its newlines and tabs (rich turns a tab
# into spaces); a one-line field (an id, a name, a status, a label) keeps neither.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROLS_IN_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def safe(value: Any, *, lines: bool = False) -> str:
    """Text from the gateway with every control character a terminal would obey written as
    Python writes it in a string: ESC as the four characters ``\\x1b``, a C1 CSI as ``\\x9b``,
    a newline as ``\\n``. With ``lines`` (messages: errors, reasons, a worker's notes) newlines
    and tabs are kept, and a CRLF line ending is a newline. Backslashes are printed as they are,
    so the escapes are what a user debugging reads (``--json`` gives the exact text)."""
    text = str(value)
    if lines:
        return _CONTROLS_IN_LINES.sub(_visible, text.replace("\r\n", "\n"))
    return _CONTROLS.sub(_visible, text)


def plain(value: Any, style: str = "", *, lines: bool = False) -> Text:
    """Text from the gateway (names, ids, messages) as it is, but ``safe``: a rich Text is never
    read as markup, so square brackets and backslashes in it are printed, and an unbalanced
    ``[/]`` cannot end the command with a MarkupError (``rich.markup.escape`` drops a backslash
    before a tag)."""
    return Text(safe(value, lines=lines), style=style)


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
