"""What the CLI reads of `fdl up`'s settings on this machine, as `fdl up` reads them (FDL_
variables, or ``.env`` in the current folder): where its gateway listens (the default URL) and the
folder of the key it stored. Each is read on its own, when it is used: a bad value of any other
never stops a command."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import httpx
from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings

from fdl.settings import FDL_SETTINGS, NOT_A_PORT

DEFAULT_HOST = "127.0.0.1"
# Where `fdl up` records its gateway's URL (in FDL_VAR_DIR, beside the key it stored): the only
# gateway that key is sent to.
GATEWAY_URL_FILE = "gateway_url"
LOCAL_NAMES = frozenset({"localhost"})
# The ports a server can listen on and a client reach it at; `fdl up` checks its own with it.
PORTS = range(1, 65536)
NOT_HERE = (
    "not localhost, a wildcard (0.0.0.0, ::) or an IP address of this machine: the default URL "
    "only ever reaches a gateway on this machine"
)
# What reading a settings class can raise besides a bad value: a .env that cannot be read.
UNREADABLE = (OSError, UnicodeError)


class BadLocalSetting(Exception):
    """The default URL cannot be made: a bad FDL_GATEWAY_HOST / FDL_GATEWAY_PORT, or an unreadable
    ``.env``; the message says which (never the value) and the way out."""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def on_this_machine(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is one of this machine's: a server could bind to it."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def local_host(host: str) -> str:
    """The host of the default URL for FDL_GATEWAY_HOST ``host``: 127.0.0.1 for none or a
    wildcard, else localhost, a loopback address or an IP address of this machine as it is.

    Anything else (a host name, an address of another machine or none at all) raises ValueError,
    not quoting it: a ``.env`` in the current folder must not send the user's FDL_API_KEY (or the
    key file's key) to another host, over plain HTTP.
    """
    host = host.strip()
    if host.lower() in LOCAL_NAMES:
        return host.lower()
    address = _ip(host) if host else ipaddress.IPv4Address(0)
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:  # fe80::1%eth0: not in a URL without its %25 quoting
            raise ValueError(NOT_HERE)
        address = address.ipv4_mapped or address
    if address is None or not (
        address.is_unspecified or address.is_loopback or on_this_machine(address)
    ):
        raise ValueError(NOT_HERE)
    return DEFAULT_HOST if address.is_unspecified else str(address)


def port_problem(port: int) -> str | None:
    """Why ``port`` cannot be a server's port (None when it can): the CLI's default URL and
    `fdl up` refuse the same ports."""
    return None if port in PORTS else NOT_A_PORT


class LocalGateway(BaseSettings):
    """The address and port of `fdl up`'s gateway on this machine (FDL_GATEWAY_HOST,
    FDL_GATEWAY_PORT), for the default URL only."""

    model_config = FDL_SETTINGS

    gateway_host: str = DEFAULT_HOST
    gateway_port: int = 8000

    @field_validator("gateway_host")
    @classmethod
    def _here(cls, host: str) -> str:
        return local_host(host)

    @field_validator("gateway_port")
    @classmethod
    def _port(cls, port: int) -> int:
        problem = port_problem(port)
        if problem is not None:
            raise ValueError(problem)
        return port

    def url(self) -> str:
        """The gateway's URL from here (an IPv6 address in brackets)."""
        return str(httpx.URL(scheme="http", host=self.gateway_host, port=self.gateway_port))


class LocalVar(BaseSettings):
    """The var folder of `fdl up` on this machine (FDL_VAR_DIR), which holds the key it stored."""

    model_config = FDL_SETTINGS

    var_dir: Path = Path("./var")


def default_url() -> str:
    """The gateway of `fdl up` on this machine, at FDL_GATEWAY_HOST and FDL_GATEWAY_PORT;
    BadLocalSetting when they (or the ``.env`` here) cannot be read."""
    try:
        return LocalGateway().url()
    except ValidationError as error:
        problems = "; ".join(
            f"FDL_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        raise BadLocalSetting(
            f"invalid setting: {problems} (or pass --url / set FDL_URL)"
        ) from None
    except UNREADABLE as error:
        raise BadLocalSetting(
            f"cannot read .env here: {error} (or pass --url / set FDL_URL)"
        ) from None


def key_file() -> Path | None:
    """Where `fdl up` stores the admin key it generated: $FDL_VAR_DIR/api_key (./var/api_key),
    relative to the current folder as `fdl up` reads it; None when FDL_VAR_DIR (or the ``.env``
    that would set it) cannot be read, for then there is no key file to look for."""
    try:
        return LocalVar().var_dir / "api_key"
    except (ValidationError, *UNREADABLE):
        return None


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a gateway's URL (None when it can): httpx reads ``localhost:8000``
    as the scheme ``localhost`` and ``127.0.0.1:8000`` as a path, and each then failed as an
    unreachable gateway (exit 3) although the gateway ran."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "it is not a URL"
    if parsed.scheme not in ("http", "https"):
        return "it does not start with http:// or https://"
    if not parsed.host:
        return "it names no host"
    return None


def recorded_url(host: str, port: int) -> str | None:
    """The URL `fdl up` records for its gateway on FDL_GATEWAY_HOST ``host`` and port ``port``:
    the default URL those settings make (127.0.0.1 for a wildcard); None for a host that is not
    this machine's (a host name), whose gateway the CLI never sends the stored key to."""
    try:
        return str(httpx.URL(scheme="http", host=local_host(host), port=port))
    except ValueError:
        return None


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """Scheme, lower-case host and port (the scheme's default if none) of ``url``."""
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL:
        return None
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host.lower(), port


def own_gateway(var_dir: Path) -> str | None:
    """The URL of the gateway `fdl up` over ``var_dir`` started: the one it recorded in
    ``var_dir``/gateway_url; with no record there (a folder of a release before it kept one), the
    default URL (FDL_GATEWAY_HOST and FDL_GATEWAY_PORT, as `fdl up` binds its gateway). None when
    neither can be read."""
    try:
        return (var_dir / GATEWAY_URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        pass
    except (OSError, ValueError):  # unreadable, or not text: no gateway of its own
        return None
    try:
        return default_url()
    except BadLocalSetting:
        return None


def is_own_gateway(url: str, var_dir: Path) -> bool:
    """Whether ``url`` names the gateway `fdl up` over ``var_dir`` started (same scheme, host
    and port as :func:`own_gateway`): the only one its stored key is sent to. Another service on
    another loopback port (anyone's on this machine) never gets it."""
    own = own_gateway(var_dir)
    return own is not None and _origin(url) is not None and _origin(url) == _origin(own)


def is_local(url: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1): never another machine."""
    host = httpx.URL(url).host
    address = _ip(host)
    return host in LOCAL_NAMES or (address is not None and address.is_loopback)
