"""Each ``FDL_`` variable a container receives is a setting its program reads.

The program is told by its command (compose ``entrypoint`` + ``command``, Kubernetes ``command``
+ ``args``): ``fdl-gateway`` reads the gateway's settings (api/settings.py), ``fdl-worker`` the
worker's (training/settings.py), ``python -m fdl.repository`` the shared ones (fdl/settings.py).
Every program ignores a name it has no setting for, so a typo, a setting meant for another
container or one nobody reads would pass unseen. Beyond the classes' fields:

- ``FDL_SERVING_REST_PORT`` is read only by ``fdl up`` (the port it starts the model server on);
  no container reads it;
- ``FDL_SERVING_GRPC_TARGET`` replaces ``FDL_SERVING_HOST`` and ``FDL_SERVING_GRPC_PORT``: beside it
  they are read by nobody;
- the shared class (CommonSettings, which every program's class extends) holds some settings that
  only the gateway reads (``GATEWAY_ONLY``: where the model server is, where the gateway listens,
  its keys): the worker, which never connects to the model server, and the model-config init
  ignore them.

Variables from sources these files do not hold (a Secret, a ConfigMap defined elsewhere) are not
seen; containers running other programs are not checked.
"""

from __future__ import annotations

import importlib
import shlex
from collections.abc import Iterator
from functools import cache
from typing import Any

from deploy.lint.common import Errors
from deploy.lint.k8s_policy import Doc, find, pod_spec

PREFIX = "FDL_"
GATEWAY = "api.settings:GatewaySettings"
# CommonSettings fields only the gateway (and `fdl up`, which passes them on) reads.
GATEWAY_ONLY = frozenset(
    {
        "FDL_SERVING_HOST",
        "FDL_SERVING_GRPC_PORT",
        "FDL_GATEWAY_HOST",
        "FDL_GATEWAY_PORT",
        "FDL_API_KEYS",
    }
)
PROGRAMS: dict[tuple[str, ...], str] = {
    ("fdl-gateway",): GATEWAY,
    ("fdl-worker",): "training.settings:WorkerSettings",
    ("python", "-m", "fdl.repository"): "fdl.settings:CommonSettings",
}
READ_BY_NO_CONTAINER = {
    "FDL_SERVING_REST_PORT": "only `fdl up` reads it",
    "FDL_START_RETRIES": "only `fdl up` reads it",
}
REPLACED_BY = {
    "FDL_SERVING_HOST": "FDL_SERVING_GRPC_TARGET",
    "FDL_SERVING_GRPC_PORT": "FDL_SERVING_GRPC_TARGET",
}


@cache
def settings_names(path: str) -> frozenset[str]:
    """The variables a pydantic-settings class reads (``module:Class``)."""
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return frozenset(PREFIX + field.upper() for field in cls.model_fields)


def program(argv: list[Any]) -> str | None:
    words = [str(a) for a in argv]
    for head, settings in PROGRAMS.items():
        if words[: len(head)] == list(head):
            return settings
    return None


def check_names(where: str, argv: list[Any], received: dict[str, str]) -> Errors:
    """``received``: each ``FDL_`` name the container gets, with where it comes from."""
    settings = program(argv)
    if settings is None:
        return []
    known = settings_names(settings)
    errors: Errors = []
    for name, source in sorted(received.items()):
        if not name.startswith(PREFIX):
            continue
        if name in READ_BY_NO_CONTAINER:
            reason = READ_BY_NO_CONTAINER[name]
            errors.append(f"{where}: {name} ({source}) is read by no container ({reason})")
        elif name in GATEWAY_ONLY and settings != GATEWAY:
            errors.append(
                f"{where}: {name} ({source}) is read only by the gateway, not by "
                f"{' '.join(map(str, argv))}: give it to the gateway alone"
            )
        elif name not in known:
            errors.append(
                f"{where}: {name} ({source}) is not a setting of {settings.split(':')[1]}, which "
                f"{' '.join(map(str, argv))} reads: give it only to the container that reads it"
            )
        elif REPLACED_BY.get(name) in received:
            errors.append(f"{where}: {name} ({source}) is unused: {REPLACED_BY[name]} replaces it")
    return errors


def k8s_env(container: Doc, docs: list[Doc]) -> dict[str, tuple[str, str]]:
    """Each variable the container gets from these manifests: its value and where it comes from
    (a ``valueFrom`` as an empty value)."""
    env: dict[str, tuple[str, str]] = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        found = find(docs, "ConfigMap", ref) if ref else None
        for key, value in ((found or {}).get("data") or {}).items():
            env[source.get("prefix", "") + key] = (str(value), f"ConfigMap {ref}")
    for entry in container.get("env") or []:
        env[entry["name"]] = (str(entry.get("value", "")), "env")
    return env


def _k8s_names(container: Doc, docs: list[Doc]) -> dict[str, str]:
    return {name: source for name, (_, source) in k8s_env(container, docs).items()}


def k8s_containers(docs: list[Doc]) -> Iterator[tuple[str, Doc, Doc, list[Any]]]:
    """(where, pod spec, container, argv) of each container and init container."""
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            argv = list(container.get("command") or []) + list(container.get("args") or [])
            yield (
                f"{doc['kind']} {doc['metadata']['name']}/{container['name']}",
                spec,
                container,
                argv,
            )


def check_k8s(docs: list[Doc]) -> Errors:
    errors: Errors = []
    for where, _, container, argv in k8s_containers(docs):
        errors += check_names(where, argv, _k8s_names(container, docs))
    return errors


def _words(value: Any) -> list[str]:
    """A compose entrypoint or command as a list (the string form split as Compose splits it)."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def check_compose(project: dict[str, Any], label: str) -> Errors:
    errors: Errors = []
    for name, service in (project.get("services") or {}).items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(str(item).partition("=")[::2] for item in env)
        argv = _words(service.get("entrypoint")) + _words(service.get("command"))
        errors += check_names(f"{label}: {name}", argv, dict.fromkeys(env, "environment"))
    return errors
