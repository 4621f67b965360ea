"""`fdl up`: the whole stack in the foreground (Redis, model server, worker, gateway).

supervisord (the `supervisor` package) supervises the children: a child that dies is logged and
started again (at once, then with a growing delay while it keeps failing to start) while the
others keep serving; Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops every child's process
group, so nothing is left behind. See docs/deploy.md, "fdl up". Here: what the stack runs
(:func:`plan_stack`); supervisord's configuration and the exec into it: :mod:`fdl.stack_supervisor`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from pydantic_settings import BaseSettings

from fdl.cli_local import GATEWAY_URL_FILE, recorded_url
from fdl.redis_server import redis_password_config, redis_server_argv
from fdl.repository import sync_config
from fdl.settings import FDL_SETTINGS, CommonSettings, check_keys, split_keys

API_KEY_FILE = "api_key"
# The password of the private Redis, made once like the admin key; redis-server reads it from
# REDIS_CONFIG_FILE, never from its command line (every local user reads those).
REDIS_PASSWORD_FILE = "redis_password"
REDIS_CONFIG_FILE = "redis.conf"
# The Redis URL of the running stack, for a second worker: FDL_REDIS_URL=$(cat var/redis_url).
REDIS_URL_FILE = "redis_url"
# In the environment of every process of a stack (supervisord and its children): the stack's var
# folder, so that a later `fdl up` finds what a killed one left running (fdl/cli_up.py).
STACK_MARKER = "FDL_UP_STACK"
# training/worker_main.py: Celery's worker with our app object, never a `training` module looked
# up in the folder `fdl up` runs in (a user's own training.py), with its options (concurrency 1,
# no -Q: the app's default queue, FDL_TRAINING_QUEUE); the containers run the same command.
WORKER_ARGV = ["fdl-worker"]


@dataclass
class Stack:
    """The commands and environment of every process `fdl up` starts."""

    env: dict[str, str]
    commands: dict[str, list[str]] = field(default_factory=dict)
    api_key: str | None = None
    api_key_generated: bool = False
    var_dir: Path = Path("var")
    start_retries: int = 10  # FDL_START_RETRIES


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def ensure_api_key(settings: CommonSettings) -> tuple[str, bool]:
    """The first admin key: FDL_API_KEYS, else the one stored under FDL_VAR_DIR, else a new one
    stored there. An empty or whitespace-only file holds no key: a new one replaces it.

    Raises:
        WeakKeyError: a key of FDL_API_KEYS, or the stored key, is a placeholder or short (the
            gateway would exit at once, again and again under the supervisor).
    """
    keys = split_keys(settings.api_keys)
    if keys:
        check_keys([("FDL_API_KEYS", keys)], ", or unset FDL_API_KEYS and `fdl up` makes one")
        return keys[0], False
    path = settings.var_dir / API_KEY_FILE
    stored = stored_secret(path)
    if stored:
        check_keys([(str(path), [stored])], f", or delete {path} and `fdl up` makes one")
        return stored, False
    return new_secret(path), True


def stored_secret(path: Path) -> str:
    """The secret kept in ``path``, or "" when it is missing, empty or whitespace only."""
    return path.read_text().strip() if path.exists() else ""


def new_secret(path: Path) -> str:
    """A new random secret, kept in ``path`` (:func:`write_private`)."""
    secret = secrets.token_urlsafe(32)
    write_private(path, secret + "\n")
    return secret


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by its owner only (0600, whatever the umask or a file left
    by a crash), written whole, then renamed over the path: a crash never leaves it empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


def model_server_argv(settings: CommonSettings, config_file: Path, poll_s: int = 2) -> list[str]:
    """The real tensorflow_model_server when it is on PATH, else our compatible server."""
    binary = shutil.which("tensorflow_model_server")
    # Ours listens where the gateway reaches it only (the loopback by default): it has no
    # authentication. The real binary listens on every interface (docs/deploy.md).
    bind = [] if binary else [f"--bind_address={settings.serving_host}"]
    return [
        binary or "fdl-model-server",
        *bind,
        f"--port={settings.serving_grpc_port}",
        f"--rest_api_port={settings.serving_rest_port}",
        f"--model_config_file={config_file}",
        f"--model_config_file_poll_wait_seconds={poll_s}",
        f"--file_system_poll_wait_seconds={poll_s}",
        # Labels kept in labels.json must not stop a restart before their versions have loaded.
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_grpc_healthcheck_service=true",
    ]


def private_redis_port(var_dir: Path, taken: Collection[int] = ()) -> int:
    """The port of the last run's private Redis when it is free again (so a second worker's
    copied command keeps working across restarts), else a new free one; never one of ``taken``
    (the ports of the stack's other servers, free until they start)."""
    try:
        port = urlsplit((var_dir / REDIS_URL_FILE).read_text().strip()).port
    except (OSError, ValueError):
        port = None
    if port and port not in taken and port_free(port):
        return port
    while (new := free_port()) in taken:
        continue
    return new


def write_redis_url(var_dir: Path, url: str) -> Path:
    """Write the URL where a second worker finds it; 0600, as it may hold a password."""
    path = var_dir / REDIS_URL_FILE
    write_private(path, url + "\n")
    return path


def record_gateway(var_dir: Path, host: str, port: int) -> None:
    """Record the URL of the gateway this stack starts (var/gateway_url), the only one the CLI
    sends the key stored here to (fdl/cli_local.py); a host that is not this machine's gets no
    record, and an earlier record is removed."""
    path = var_dir / GATEWAY_URL_FILE
    url = recorded_url(host, port)
    if url is None:
        path.unlink(missing_ok=True)
    else:
        write_private(path, url + "\n")


# Query parameters of a Redis URL that redis-py reads as credentials (redis://host/0?password=).
SECRET_QUERY = ("password", "username")


def redacted(url: str) -> str:
    """``url`` with its credentials masked: the userinfo's password and the ``password`` and
    ``username`` query parameters."""
    parts = urlsplit(url)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    query = [
        (name, "***" if name.lower() in SECRET_QUERY else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    if any(value == "***" for _name, value in query):
        parts = parts._replace(query=urlencode(query, safe="*"))
    return parts.geturl()


class _GatewayHosts(BaseSettings):
    """FDL_ALLOWED_HOSTS where the user set it (environment or .env), as the gateway reads it."""

    model_config = FDL_SETTINGS
    allowed_hosts: str | None = None


def loopback_hosts(host: str) -> str | None:
    """FDL_ALLOWED_HOSTS for a gateway bound to ``host``: the loopback names where that is a
    loopback address or localhost (a page elsewhere whose name resolves to 127.0.0.1 then cannot
    read it: DNS rebinding), else None (any Host, as the gateway's default)."""
    bare = host.strip("[]").lower()
    try:
        loopback = ipaddress.ip_address(bare.split("%")[0]).is_loopback
    except ValueError:
        loopback = bare == "localhost"
    if not loopback:
        return None
    bound = f"[{bare}]" if ":" in bare else bare
    return ",".join(dict.fromkeys(["localhost", "127.0.0.1", "[::1]", bound]))


def plan_stack(settings: CommonSettings) -> Stack:
    model_dir = settings.model_dir.resolve()
    var_dir = settings.var_dir.resolve()
    data_dir = settings.data_dir.resolve()
    for folder in (model_dir, var_dir, data_dir):
        folder.mkdir(parents=True, exist_ok=True)
    config_file = sync_config(model_dir, settings.serving_model_base_path)
    api_key, generated = ensure_api_key(settings)
    env = {
        "FDL_MODEL_DIR": str(model_dir),
        "FDL_VAR_DIR": str(var_dir),
        "FDL_DATA_DIR": str(data_dir),
        "FDL_API_KEYS": settings.api_keys or api_key,
        "FDL_SERVING_HOST": settings.serving_host,
        "FDL_SERVING_GRPC_PORT": str(settings.serving_grpc_port),
        "FDL_SERVING_REST_PORT": str(settings.serving_rest_port),
        "FDL_GATEWAY_HOST": settings.gateway_host,
        "FDL_GATEWAY_PORT": str(settings.gateway_port),
        "PYTHONUNBUFFERED": "1",
        STACK_MARKER: str(var_dir),
    }
    hosts = loopback_hosts(settings.gateway_host)
    if hosts and _GatewayHosts().allowed_hosts is None:
        env["FDL_ALLOWED_HOSTS"] = hosts
    stack = Stack(env=env, api_key=api_key, api_key_generated=generated, var_dir=var_dir)
    stack.start_retries = settings.start_retries
    if settings.redis_url:
        env["FDL_REDIS_URL"] = settings.redis_url
    else:
        servers = (settings.gateway_port, settings.serving_grpc_port, settings.serving_rest_port)
        port = private_redis_port(var_dir, servers)
        password_file = var_dir / REDIS_PASSWORD_FILE
        password = stored_secret(password_file) or new_secret(password_file)
        config = var_dir / REDIS_CONFIG_FILE
        write_private(config, redis_password_config(password))
        env["FDL_REDIS_URL"] = f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"
        stack.commands["redis"] = redis_server_argv(port, var_dir / "redis", config_file=config)
    write_redis_url(var_dir, env["FDL_REDIS_URL"])
    record_gateway(var_dir, settings.gateway_host, settings.gateway_port)
    stack.commands["serving"] = model_server_argv(settings, config_file)
    stack.commands["worker"] = list(WORKER_ARGV)
    stack.commands["gateway"] = ["fdl-gateway"]
    return stack


def gateway_url(host: str, port: int) -> str:
    """The gateway's URL in `fdl up`'s start-up banner: an IPv6 address in brackets
    (``http://[::1]:8000``, not ``http://::1:8000``), a zone's ``%`` written ``%25``."""
    if ":" in host and not host.startswith("["):
        host = f"[{host.replace('%', '%25')}]"
    return f"http://{host}:{port}"


def redis_banner(stack: Stack) -> str:
    """The start-up line that says where Redis is and how a second worker joins."""
    url = stack.env["FDL_REDIS_URL"]
    where = stack.var_dir / REDIS_URL_FILE
    if "redis" in stack.commands:
        kind = (
            f"private, listening on 127.0.0.1 only; its password is in "
            f"{stack.var_dir / REDIS_PASSWORD_FILE} and {where} (mode 0600)"
        )
    elif redacted(url) != url:
        kind = f"from FDL_REDIS_URL; the password is in {where} (mode 0600)"
    else:
        kind = "from FDL_REDIS_URL"
    join = f"a second worker joins with FDL_REDIS_URL=$(cat {where})"
    return f"Redis {redacted(url)} ({kind}); {join}"
