"""Container health check without curl: ``python -m fdl.healthcheck URL [--timeout S]``.

Exits 0 when ``URL`` answers with a 2xx status within the timeout, otherwise 1 with a one-line
reason on stderr. Standard library only, so it runs in the slim gateway image (Docker
``HEALTHCHECK``) and in any image that has our package.

``python -m fdl.healthcheck --from-env /healthz`` asks the gateway of this container: on its probe
port, FDL_PROBE_PORT, when that reads as a port, else on FDL_GATEWAY_PORT (8000 when unset). Both
are read as the gateway's settings read them (pydantic's integers: "00" is 0, off; "8081.0" is
8081), so the check never asks a port the gateway does not listen on; pydantic is imported for
this only.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_GATEWAY_PORT = 8000  # fdl/settings.py's


class PortError(ValueError):
    pass


def _env_port(name: str, lowest: int) -> int | None:
    """The port ``name`` sets as the settings would read it (an empty value is unset: None)."""
    raw = os.environ.get(name, "")
    if raw == "":
        return None
    # Imported here: the plain URL check stays standard library only.
    from pydantic import TypeAdapter, ValidationError

    try:
        port = TypeAdapter(int).validate_python(raw)
    except ValidationError:
        raise PortError(f"{name}={raw!r} is not an integer") from None
    if not lowest <= port <= 65535:
        raise PortError(f"{name}={raw!r} is not a port ({lowest}-65535)")
    return port


def url_from_env(path: str) -> str:
    """``path`` on this host's gateway: its probe port (FDL_PROBE_PORT, 0 or unset: off), else
    FDL_GATEWAY_PORT. Raises PortError for a value the gateway's settings would refuse."""
    port = _env_port("FDL_PROBE_PORT", 0) or _env_port("FDL_GATEWAY_PORT", 1)
    return f"http://127.0.0.1:{port or DEFAULT_GATEWAY_PORT}/{path.lstrip('/')}"


def check(url: str, timeout: float = DEFAULT_TIMEOUT_S) -> str | None:
    """Return ``None`` when healthy, else a reason."""
    if not url.startswith(("http://", "https://")):
        return f"not an http(s) URL: {url!r}"
    request = urllib.request.Request(url, headers={"User-Agent": "fdl-healthcheck"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        return f"{url} answered HTTP {error.code}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"{url} unreachable: {reason}"
    if not 200 <= status < 300:
        return f"{url} answered HTTP {status}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fdl.healthcheck", description=__doc__)
    parser.add_argument("url", help="the URL; with --from-env, the path (/healthz)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
    parser.add_argument(
        "--from-env",
        action="store_true",
        help="ask the gateway's port from FDL_PROBE_PORT (unless 0), else FDL_GATEWAY_PORT",
    )
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        url = url_from_env(args.url) if args.from_env else args.url
    except PortError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    reason = check(url, args.timeout)
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
