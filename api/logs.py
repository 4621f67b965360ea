"""JSON logs, one object per line, each with the request id of the request being served."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}


# The HTTP guard's warnings (api/http_guard.py: malformed requests, timeouts, the connection cap)
# come from clients anyone can open: at most one line per reason this often, the next one saying
# how many were not logged (fdl_gateway_http_guard_total counts them all).
GUARD_LOG_INTERVAL_S = 10.0
# What uvicorn logs before the guard's own line for a request httptools cannot parse.
_UVICORN_PARSE_WARNING = "Invalid HTTP request received."


class OncePerInterval(logging.Filter):
    """Lets through at most one warning (or worse) per value of its ``reason`` attribute every
    ``interval_s``; the next one let through says how many were held back (``not_logged``).
    Records without a reason, and lower levels, always pass."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        reason = getattr(record, "reason", None)
        if record.levelno < logging.WARNING or not isinstance(reason, str):
            return True
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval_s:
            self._held[reason] = self._held.get(reason, 0) + 1
            return False
        self._last[reason] = now
        held = self._held.pop(reason, 0)
        if held and isinstance(record.args, tuple):
            record.msg = f"{record.msg} (and %d more since the previous such line, not logged)"
            record.args = (*record.args, held)
            record.not_logged = held
        return True


class NoUvicornParseWarning(logging.Filter):
    """Drops uvicorn's warning for a request httptools cannot parse: the guard logs each such
    request itself, with its client and reason (rate-limited)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _UVICORN_PARSE_WARNING


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# Control characters (C0, DEL, C1) as \xNN: a client's path or header must not start a forged
# line (a newline) or drive the reader's terminal (ESC, CR) in the plain format.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


class PlainFormatter(logging.Formatter):
    """``time LEVEL logger: message [request id]``, one line per record but for tracebacks."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_CONTROLS)
        line = super().formatMessage(record)
        request_id = request_id_var.get()
        return f"{line} [{request_id}]" if request_id else line


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """Route our logs and uvicorn's through one handler on stderr."""
    # Neither format shows the caller's file and line, thread or process, so they are not
    # collected for each record (the logging HOWTO's "Optimization" section): the gateway writes
    # a line per request, and the caller lookup walks the stack every time.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    _set_filter(logging.getLogger("uvicorn.error"), NoUvicornParseWarning())
    _set_filter(logging.getLogger("fdl.gateway.http"), OncePerInterval(GUARD_LOG_INTERVAL_S))
    # Our middleware writes one access line per request (with the request id); uvicorn's would
    # repeat it without one.
    logging.getLogger("uvicorn.access").disabled = True


def _set_filter(logger: logging.Logger, log_filter: logging.Filter) -> None:
    """Adds ``log_filter`` to ``logger`` in place of any of its class added before (logging may
    be configured more than once in a process)."""
    for old in list(logger.filters):
        if type(old) is type(log_filter):
            logger.removeFilter(old)
    logger.addFilter(log_filter)
