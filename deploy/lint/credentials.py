"""Credentials in the Compose files and the Kubernetes manifests.

Redis (the job store and the Celery broker) requires a password, given to redis-server on its
standard input from ``REDISCLI_AUTH`` (which redis-cli, the health checks' client, reads too);
every Redis URL carries that same password, from a Compose variable or a Kubernetes Secret, and
sits in the environment, never in a command line (``ps`` shows those); API keys are never a plain
environment variable (Compose: a secret file; Kubernetes: a Secret) nor ConfigMap data.
"""

from __future__ import annotations

import re
from typing import Any

from deploy.lint.common import Errors

Doc = dict[str, Any]
KEY_SETTINGS = ("FDL_API_KEYS", "FDL_CLASSIFY_KEYS")
SECRETS_DIR = "/run/secrets/"
_REDIS_URL = re.compile(r"rediss?://[^\s\"'`]*")
# A Compose variable reference, its default or error message (which may hold spaces) dropped.
_COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)[^}]*\}")
_K8S_REFERENCE = re.compile(r"\$\((\w+)\)")
# A Compose variable with a default (``${X:-value}``, ``${X-value}``): for a password, a fallback
# written in the file that Redis and its clients would then accept.
_DEFAULTED = re.compile(r"\$\{\w+:?-[^}]*\}")
# The server's configuration line that sets the password from REDISCLI_AUTH.
_REQUIREPASS = re.compile(r"^\s*requirepass\s+\"?\$\{?REDISCLI_AUTH\}?\"?\s*$", re.MULTILINE)


def url_passwords(text: str) -> list[str | None]:
    """The password of each Redis URL in ``text`` (None where a URL has none)."""
    passwords: list[str | None] = []
    for url in _REDIS_URL.findall(text):
        authority = url.split("://", 1)[1].split("/", 1)[0]
        userinfo, _, _ = authority.rpartition("@")
        passwords.append(userinfo.partition(":")[2] or None)
    return passwords


def is_redis_image(image: str) -> bool:
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0] == "redis"


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


def _command_errors(where: str, argv_text: str) -> Errors:
    """A Redis URL or ``--broker`` in a command line: its password would show in ``ps``."""
    if _REDIS_URL.search(argv_text) or re.search(r"--broker\b", argv_text):
        return [
            f"{where}: a broker/Redis URL in a command line (ps shows its password); pass it in "
            "the environment (FDL_REDIS_URL, CELERY_BROKER_URL)"
        ]
    return []


def _server_errors(where: str, command: str, auth: str | None, source: str) -> Errors:
    """A Redis server's command and ``REDISCLI_AUTH`` (``auth``: where it comes from, or None)."""
    errors: Errors = []
    if "--requirepass" in command:
        errors.append(f"{where}: --requirepass in its arguments (ps shows the password)")
    if not _REQUIREPASS.search(command):
        errors.append(
            f"{where}: Redis starts without a password (no `requirepass $REDISCLI_AUTH` line "
            "on its standard input)"
        )
    if auth is None:
        errors.append(f"{where}: REDISCLI_AUTH (the Redis password) must come from {source}")
    return errors


def _same_password(clients: list[tuple[str, str]], servers: set[str]) -> Errors:
    """Each client's password (``clients``: where, source) is the one Redis requires."""
    if not servers:
        return []
    return [
        f"{where}: its password comes from {source}, Redis's from {', '.join(sorted(servers))}"
        for where, source in clients
        if source not in servers
    ]


def _secret_paths(service: Doc) -> set[str]:
    """Where the service's compose secrets appear in its containers."""
    paths = set()
    for secret in service.get("secrets") or []:
        target = secret if isinstance(secret, str) else secret.get("target") or secret["source"]
        paths.add(target if target.startswith("/") else SECRETS_DIR + target)
    return paths


def _compose_key_errors(where: str, service: Doc, env: dict[str, str], project: Doc) -> Errors:
    """API keys come in files from compose secrets, never in the environment."""
    errors: Errors = []
    for secret in service.get("secrets") or []:
        source = secret if isinstance(secret, str) else secret.get("source")
        if source not in (project.get("secrets") or {}):
            errors.append(f"{where}: uses secret {source!r}, which is not declared")
    for key in KEY_SETTINGS:
        if key in env:
            errors.append(
                f"{where}: {key} in the environment (docker inspect shows it, child processes "
                f"inherit it); use {key}_FILE with a compose secret"
            )
        path = env.get(f"{key}_FILE")
        if path is not None and path not in _secret_paths(service):
            errors.append(f"{where}: {key}_FILE is {path!r}, not a secret it mounts")
    return errors


def check_compose(project: Doc, label: str) -> Errors:
    errors: Errors = []
    clients: list[tuple[str, str]] = []
    servers: set[str] = set()
    for name, service in (project.get("services") or {}).items():
        where = f"{label}: {name}"
        raw = service.get("environment") or {}
        if isinstance(raw, list):
            raw = dict(str(item).partition("=")[::2] for item in raw)
        env = {k: _COMPOSE_VARIABLE.sub(r"${\1}", _text(v)) for k, v in raw.items()}
        errors += [
            f"{where}: {key} falls back to a password written in the file; use a required "
            "variable (${NAME:?message})"
            for key, value in raw.items()
            if (key == "REDISCLI_AUTH" or "redis://" in _text(value) or "rediss://" in _text(value))
            and _DEFAULTED.search(_text(value))
        ]
        errors += _compose_key_errors(where, service, env, project)
        for key, value in env.items():
            for password in url_passwords(value):
                variable = re.fullmatch(r"\$\{(\w+)\}", password or "")
                if password is None:
                    errors.append(f"{where}: {key} is a Redis URL without a password")
                elif variable is None:
                    errors.append(
                        f"{where}: {key} has a password written in the file; use a "
                        "variable (deploy/.env)"
                    )
                else:
                    clients.append((f"{where}: {key}", f"${{{variable.group(1)}}}"))
        health = (service.get("healthcheck") or {}).get("test")
        for part, argv in (
            ("command", service.get("command")),
            ("entrypoint", service.get("entrypoint")),
            ("healthcheck", health),
        ):
            errors += _command_errors(f"{where} {part}", _text(argv))
        if is_redis_image(str(service.get("image", ""))):
            auth = env.get("REDISCLI_AUTH", "")
            source = auth if re.fullmatch(r"\$\{\w+\}", auth) else None
            command = _text(service.get("command")).replace("$$", "$")
            errors += _server_errors(where, command, source, "a variable")
            servers |= {source} if source else set()
    return errors + _same_password(clients, servers)


def _container_errors(
    where: str, container: Doc, clients: list[tuple[str, str]], servers: set[str]
) -> Errors:
    errors: Errors = []
    from_secret: dict[str, str] = {}  # the variables set from a Secret so far: "Secret name/key"
    for entry in container.get("env") or []:
        name = entry["name"]
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            from_secret[name] = f"Secret {ref.get('name')}/{ref.get('key')}"
        elif name in KEY_SETTINGS:
            errors.append(f"{where}: {name} is a plain value; take it from a Secret")
        for password in url_passwords(_text(entry.get("value"))):
            reference = _K8S_REFERENCE.fullmatch(password or "")
            if reference is None or reference.group(1) not in from_secret:
                errors.append(
                    f"{where}: {name} is a Redis URL without a password from a Secret (a "
                    "$(VARIABLE) set above it from a secretKeyRef)"
                )
            else:
                clients.append((f"{where}: {name}", from_secret[reference.group(1)]))
    argv = _text(container.get("command")) + "\n" + _text(container.get("args"))
    errors += _command_errors(where, argv)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        command = ((container.get(probe) or {}).get("exec") or {}).get("command")
        errors += _command_errors(f"{where} {probe}", _text(command))
    if is_redis_image(str(container.get("image", ""))):
        source = from_secret.get("REDISCLI_AUTH")
        errors += _server_errors(where, argv, source, "a Secret (valueFrom.secretKeyRef)")
        servers |= {source} if source else set()
    return errors


def check_k8s(docs: list[Doc]) -> Errors:
    errors: Errors = []
    clients: list[tuple[str, str]] = []
    servers: set[str] = set()
    for doc in docs:
        kind, name = doc.get("kind"), doc["metadata"]["name"]
        if kind == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                if key in KEY_SETTINGS:
                    errors.append(f"ConfigMap {name}: {key} holds API keys in plain text")
                if _REDIS_URL.search(str(value)):
                    errors.append(
                        f"ConfigMap {name}: {key} is a Redis URL (without the password, or with "
                        "it in plain text); build it in each pod from the Secret"
                    )
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                where = f"{kind} {name}/{container['name']}"
                errors += _container_errors(where, container, clients, servers)
    return errors + _same_password(clients, servers)
