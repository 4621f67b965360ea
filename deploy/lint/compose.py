"""The Compose files: the Compose Specification schema, references between services, the GPU."""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from deploy.lint import checkpoints, credentials, dockerfile, env_names, probes, runtime
from deploy.lint.common import COMPOSE_FILES, Errors, load_compose, merge_compose, strip_tags

REQUIRED_SERVICES = ("redis", "serving", "gateway", "worker", "flower", "tensorboard")
_VARIABLE = re.compile(r"\$(\$|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema vendored by check-jsonschema (no network)."""
    files = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(files.joinpath("compose-spec.json").read_text())


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose variable interpolation: ``$$``, ``${V}``, ``${V:-default}``, ``${V:?error}``."""
    env = dict(os.environ) if env is None else env

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2) or match.group(5)
        op, arg = match.group(3), match.group(4) or ""
        current = env.get(name)
        if op in (":-", "-") and (current is None or (op == ":-" and current == "")):
            return arg
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise ValueError(f"required variable {name} is missing: {arg}")
        return current or ""

    return _VARIABLE.sub(replace, value)


def schema_errors(document: Any, label: str) -> Errors:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{label}: {'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    deploy = service.get("deploy") or {}
    return ((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or []


def check_references(project: dict[str, Any], compose_dir: Path, root: Path) -> Errors:
    errors: Errors = []
    services: dict[str, Any] = project.get("services") or {}
    volumes = set((project.get("volumes") or {}).keys())
    _, stages = (
        dockerfile.parse(root / "Dockerfile") if (root / "Dockerfile").exists() else ({}, [])
    )
    targets = {s.name for s in stages}
    for name in REQUIRED_SERVICES:
        if name not in services:
            errors.append(f"compose: no service {name!r}")
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            if dep not in services:
                errors.append(f"compose: {name} depends on unknown service {dep!r}")
                continue
            condition = (spec or {}).get("condition")
            if condition == "service_healthy" and "healthcheck" not in services[dep]:
                errors.append(
                    f"compose: {name} waits for {dep} to be healthy; it has no healthcheck"
                )
        if "depends_on" in service and not isinstance(service["depends_on"], dict):
            errors.append(f"compose: {name}: depends_on must list health conditions")
        for mount in service.get("volumes") or []:
            source = str(mount).split(":", 1)[0]
            if source.startswith((".", "/")):
                if not (compose_dir / source).exists():
                    errors.append(f"compose: {name}: bind mount source {source} does not exist")
            elif source not in volumes:
                errors.append(f"compose: {name}: volume {source!r} is not declared")
        build = service.get("build")
        if isinstance(build, dict):
            context = compose_dir / build.get("context", ".")
            if not (context / build.get("dockerfile", "Dockerfile")).exists():
                errors.append(f"compose: {name}: no Dockerfile in build context {context}")
            if build.get("target") and build["target"] not in targets:
                errors.append(
                    f"compose: {name}: build target {build['target']!r} not in Dockerfile"
                )
        if "healthcheck" not in service and service.get("restart", "no") != "no":
            errors.append(f"compose: long-running service {name} has no healthcheck")
    return errors


def check(root: Path) -> Errors:
    paths = [root / p for p in COMPOSE_FILES]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        return [f"compose file missing: {m}" for m in missing]
    errors: Errors = []
    documents = []
    for path in paths:
        try:
            document = load_compose(path)
        except Exception as error:
            errors.append(f"{path.name}: cannot parse: {error}")
            continue
        documents.append(document)
        errors += schema_errors(strip_tags(document), path.name)
    if errors:
        return errors
    base, cpu, model_server = documents
    errors += check_references(base, paths[0].parent, root)
    errors += check_serving_exposure(base)
    errors += credentials.check_compose(base, "compose.yaml")
    errors += probes.check_compose(base, "compose.yaml")
    errors += runtime.check_compose(base, "compose.yaml")
    errors += env_names.check_compose(base, "compose.yaml")
    errors += checkpoints.check_compose(base, "compose.yaml")
    worker = (base.get("services") or {}).get("worker") or {}
    if not any("gpu" in (d.get("capabilities") or []) for d in gpu_devices(worker)):
        errors.append(
            "compose.yaml: worker reserves no GPU (deploy.resources.reservations.devices)"
        )
    merged = merge_compose(base, cpu)
    errors += schema_errors(merged, "compose.yaml + compose.cpu.yaml")
    if not errors:
        errors += credentials.check_compose(merged, "compose.yaml + compose.cpu.yaml")
    if gpu_devices((merged.get("services") or {}).get("worker") or {}):
        errors.append("compose.cpu.yaml: the worker still reserves a GPU")
    errors += check_model_server_swap(merged, model_server, paths[0].parent, root)
    return errors


def check_serving_exposure(base: dict[str, Any]) -> Errors:
    """The model server has no authentication: no published port, a network of its own that
    only the gateway joins (the worker writes the model volume and never connects to it)."""
    services = base.get("services") or {}
    errors: Errors = []
    if (services.get("serving") or {}).get("ports"):
        errors.append("compose.yaml: serving publishes ports (it has no authentication)")
    networks = base.get("networks") or {}
    own = [n for n in (services.get("serving") or {}).get("networks") or [] if n != "default"]
    if not own or not all((networks.get(n) or {}).get("internal") for n in own):
        errors.append("compose.yaml: serving must be on internal networks only")
    for name, service in services.items():
        if name not in ("serving", "gateway") and set(own) & set(service.get("networks") or []):
            errors.append(f"compose.yaml: {name} must not join the model server's network")
    return errors


def check_model_server_swap(
    merged: dict[str, Any], override: dict[str, Any], compose_dir: Path, root: Path
) -> Errors:
    """compose.model-server.yaml changes the serving image only (built from our target)."""
    errors = schema_errors(strip_tags(override), "compose.model-server.yaml")
    services = override.get("services") or {}
    if set(services) != {"serving"} or set(services["serving"]) != {"image", "build"}:
        errors.append("compose.model-server.yaml: must set only serving's image and build")
        return errors
    full = merge_compose(merged, override)
    label = "compose.yaml + compose.cpu.yaml + compose.model-server.yaml"
    errors += schema_errors(full, label)
    errors += check_references(full, compose_dir, root)
    errors += runtime.check_compose(full, label)
    return errors
