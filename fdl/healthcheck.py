"""Container health check without curl: ``python -m fdl.healthcheck URL [--timeout S]``.

Exits 0 when ``URL`` answers with a 2xx status within the timeout, otherwise 1 with a one-line
reason on stderr. Standard library only, so it runs in the slim gateway image (Docker
``HEALTHCHECK``) and in any image that has our package.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

DEFAULT_TIMEOUT_S = 5.0


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
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    reason = check(args.url, args.timeout)
    if reason is not None:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
