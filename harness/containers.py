"""What the containers run, read from the Dockerfile, deploy/compose.yaml and deploy/k8s/base.

The tests run these exact commands outside containers; only hosts, ports and paths that exist only
inside a container are swapped for local ones.
"""

from __future__ import annotations

import re
import secrets
from functools import cache
from pathlib import Path
from typing import Any

from deploy.lint import dockerfile
from deploy.lint.common import load_compose, load_yaml_documents
from deploy.lint.compose import interpolate
from harness.procs import REPO_ROOT, Process, wait_for
from harness.procs import run_command as run

TEST_API_KEY = "deploy-test-admin-key"
# deploy/compose.yaml requires FDL_REDIS_PASSWORD (Redis's password, in every client's URL).
COMPOSE_VARIABLES = {"FDL_API_KEYS": TEST_API_KEY, "FDL_REDIS_PASSWORD": secrets.token_hex(16)}


@cache
def compose() -> dict[str, Any]:
    return load_compose(REPO_ROOT / "deploy" / "compose.yaml")


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def _interpolated(value: Any) -> str:
    return interpolate(str(value), COMPOSE_VARIABLES)


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolated(v) for k, v in env.items()}


def command(name: str) -> list[str]:
    svc = service(name)
    return [_interpolated(a) for a in (svc.get("entrypoint") or []) + (svc.get("command") or [])]


def healthcheck(name: str) -> list[str]:
    test = [_interpolated(a) for a in service(name)["healthcheck"]["test"]]
    if test[0] == "CMD":
        return test[1:]
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    raise AssertionError(f"unexpected healthcheck form {test[0]!r}")


@cache
def stages() -> dict[str, dockerfile.Stage]:
    _, parsed = dockerfile.parse(REPO_ROOT / "Dockerfile")
    return {s.name: s for s in parsed}


def image_env(target: str) -> dict[str, str]:
    """The ENV a Dockerfile target sets, less PATH (the local venv's stays)."""
    env = {}
    for stage in stages().values():
        if stage.name == target or (target == "gateway" and stage.name == "gateway-build"):
            env.update(stage.env())
    return {k: v for k, v in env.items() if k != "PATH"}


def image_cmd(target: str) -> list[str]:
    ins = stages()[target].last("CMD")
    assert ins is not None
    return ins.argv()


def image_healthcheck(target: str) -> list[str]:
    ins = stages()[target].last("HEALTHCHECK")
    assert ins is not None
    return ins.argv()


@cache
def k8s_docs() -> list[dict[str, Any]]:
    base = REPO_ROOT / "deploy" / "k8s" / "base"
    return [d for f in sorted(base.glob("*.yaml")) for d in load_yaml_documents(f) if "kind" in d]


def k8s_pod(kind: str, name: str) -> dict[str, Any]:
    for doc in k8s_docs():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc["spec"]["template"]["spec"]
    raise AssertionError(f"no {kind} {name} in deploy/k8s/base")


def k8s_argv(container: dict[str, Any]) -> list[str]:
    return list(container.get("command") or []) + list(container.get("args") or [])


def swap(argv: list[str], old: str, new: str) -> list[str]:
    """Replace ``old`` (a port, host or path) in every argument, as a whole token."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(old)}(?![\w])")
    return [pattern.sub(new, a) for a in argv]


def local_path(container_path: str, mapping: dict[str, Path]) -> str:
    for prefix, local in mapping.items():
        if container_path.startswith(prefix):
            return str(local) + container_path[len(prefix) :]
    return container_path


def check_serves_healthcheck(
    name: str, argv: list[str], health: list[str], logs_dir: Path, timeout: float
) -> None:
    """Start ``argv``; ``health`` must pass while it runs and fail once it is stopped."""
    process = Process(name, argv, logs_dir)
    try:
        wait_for(
            lambda: run(health, timeout=15).returncode == 0,
            timeout,
            f"{name}'s healthcheck",
            interval=0.5,
            check=process.ensure_alive,
        )
    finally:
        process.stop()
    assert run(health, timeout=15).returncode != 0
