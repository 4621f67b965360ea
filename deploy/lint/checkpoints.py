"""The workers' training checkpoints (``FDL_CHECKPOINT_DIR``) lie on storage every worker shares.

A job handed back by a stopping worker (a rollout, a scale-down, ``podman stop``) or lost with
one (an OOM-killed pod) resumes from its last epoch on whichever worker takes it next, from the
checkpoint that worker finds. In a folder of one worker's own (an emptyDir, the default
``<FDL_VAR_DIR>/checkpoints`` on it, an anonymous compose volume) no other worker finds it: the
job starts over from epoch 1, and a pod restarted with an emptyDir keeps nothing. So each
container running ``fdl-worker`` sets ``FDL_CHECKPOINT_DIR`` to a folder at or under a writable
mount of

- Kubernetes: a PersistentVolumeClaim of these manifests with ReadWriteMany (as fdl-models);
- compose: a named volume declared in the file (every replica of ``--scale worker=N`` mounts the
  same one, and it outlives the containers);

unless ``FDL_CHECKPOINTS`` switches checkpoints off.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from deploy.lint import env_names
from deploy.lint.common import Errors
from deploy.lint.k8s_policy import Doc, find

NAME = "FDL_CHECKPOINT_DIR"
SWITCH = "FDL_CHECKPOINTS"
WORKER = "training.settings:WorkerSettings"
_OFF = {"0", "false", "no", "off", "f", "n"}


def _under(path: str, mount: str) -> bool:
    folder, root = PurePosixPath(path), PurePosixPath(mount)
    return folder == root or root in folder.parents


def _where_needed(where: str, env: dict[str, str]) -> tuple[str | None, Errors]:
    """The folder to check, or None (with an error when it is missing)."""
    if str(env.get(SWITCH, "")).strip().lower() in _OFF:
        return None, []
    folder = env.get(NAME)
    if not folder:
        return None, [
            f"{where}: {NAME} unset: the checkpoints would go to the worker's own FDL_VAR_DIR, "
            "where a job handed to another worker is not found (it starts over from epoch 1)"
        ]
    if not PurePosixPath(folder).is_absolute():
        return None, [f"{where}: {NAME} {folder!r} is not an absolute path"]
    return folder, []


def check_k8s(docs: list[Doc]) -> Errors:
    errors: Errors = []
    for where, spec, container, argv in env_names.k8s_containers(docs):
        if env_names.program(argv) == WORKER:
            errors += _check_k8s_worker(where, spec, container, docs)
    return errors


def _check_k8s_worker(where: str, spec: Doc, container: Doc, docs: list[Doc]) -> Errors:
    env = {name: value for name, (value, _) in env_names.k8s_env(container, docs).items()}
    folder, errors = _where_needed(where, env)
    if folder is None:
        return errors
    mounts = [
        m
        for m in container.get("volumeMounts") or []
        if _under(folder, str(m.get("mountPath", ""))) and not m.get("readOnly")
    ]
    # The innermost mount holds the folder.
    mount: Doc = max(mounts, key=lambda m: len(str(m["mountPath"])), default={})
    volume: Doc = next(
        (v for v in spec.get("volumes") or [] if v.get("name") == mount.get("name")), {}
    )
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    if not claim:
        return [
            f"{where}: {NAME} {folder} is on no writable PersistentVolumeClaim mount: each pod "
            "would keep its own checkpoints (a job handed to another pod starts over from epoch "
            "1; an emptyDir keeps nothing across a restart)"
        ]
    pvc = find(docs, "PersistentVolumeClaim", claim)
    modes = ((pvc or {}).get("spec") or {}).get("accessModes") or []
    if pvc is not None and "ReadWriteMany" not in modes:
        return [
            f"{where}: {NAME} {folder} is on claim {claim}, not ReadWriteMany ({modes}): every "
            "worker pod, on any node, must mount it"
        ]
    return []


def _compose_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each mount; source "" for an anonymous volume."""
    mounts: list[tuple[str, str, bool]] = []
    for mount in service.get("volumes") or []:
        if isinstance(mount, dict):
            if mount.get("type", "volume") == "volume":
                target = str(mount.get("target", ""))
                mounts.append(
                    (str(mount.get("source") or ""), target, bool(mount.get("read_only")))
                )
            continue
        parts = str(mount).split(":")
        if len(parts) == 1:
            mounts.append(("", parts[0], False))
        else:
            options = parts[2].split(",") if len(parts) > 2 else []
            mounts.append((parts[0], parts[1], "ro" in options))
    return mounts


def check_compose(project: dict[str, Any], label: str) -> Errors:
    errors: Errors = []
    declared = set((project.get("volumes") or {}).keys())
    for name, service in (project.get("services") or {}).items():
        argv = env_names._words(service.get("entrypoint")) + env_names._words(
            service.get("command")
        )
        if env_names.program(argv) != WORKER:
            continue
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(str(item).partition("=")[::2] for item in env)
        where = f"{label}: {name}"
        folder, problems = _where_needed(where, {k: str(v) for k, v in env.items()})
        errors += problems
        if folder is None:
            continue
        mounts = [m for m in _compose_mounts(service) if _under(folder, m[1]) and not m[2]]
        source = max(mounts, key=lambda m: len(m[1]), default=("", "", False))[0]
        if source not in declared:
            errors.append(
                f"{where}: {NAME} {folder} is on no writable named volume of this file: "
                "the workers (--scale worker=N) would not share the checkpoints, and a "
                "container removed loses them"
            )
    return errors
