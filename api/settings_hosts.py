"""The gateway's FDL_ALLOWED_HOSTS and FDL_TRUSTED_PROXIES, parsed as the gateway and uvicorn
read them; api/settings.py's GatewaySettings validates both with these."""

from __future__ import annotations

import ipaddress


def parse_allowed_hosts(value: str) -> frozenset[bytes] | None:
    """The lower-case names of FDL_ALLOWED_HOSTS, or None for "*" (any Host)."""
    entries = [part.strip().lower() for part in value.split(",") if part.strip()]
    if entries == ["*"]:
        return None
    if not entries or "*" in entries:
        raise ValueError("name the hosts, or '*' (any host) alone")
    for entry in entries:
        bracketed = entry.startswith("[") and entry.endswith("]")
        if not entry.isascii() or (":" in entry and not bracketed):
            raise ValueError(f"{entry!r}: a name or address without a port (IPv6 in brackets)")
    return frozenset(entry.encode() for entry in entries)


def check_trusted_proxies(value: str) -> str:
    """Each entry as uvicorn's ProxyHeadersMiddleware reads it: an address, or (with a /) a
    network without host bits; "*" alone. uvicorn takes any other entry (and "*" beside
    others) for a host name that no peer is: every client behind the proxy would then count
    as the proxy (one rate-limit bucket)."""
    entries = [part.strip() for part in value.split(",") if part.strip()]
    if "*" in entries and len(entries) > 1:
        raise ValueError("'*' (any proxy) must be the only entry")
    for entry in entries:
        try:
            if "/" in entry:
                ipaddress.ip_network(entry)  # strict, as uvicorn's
            elif entry != "*":
                ipaddress.ip_address(entry)
        except ValueError:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is neither an IP address nor a CIDR network (nor *)"
                ) from None
            raise ValueError(f"{entry!r} has host bits set (the network is {network})") from None
    return value
