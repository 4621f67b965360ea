"""How the containers run: an init as PID 1, a read-only root filesystem and a writable /tmp.

PID 1: the kernel drops every signal that PID 1 has no handler for. Our programs install theirs
only after their imports (uvicorn, Celery: the first second or so), TF Serving has none for
SIGTERM at all, so a stop sent then is lost and the runtime SIGKILLs after its grace period (the
worker even took a job from the queue meanwhile). Our images (``fdl-serve/*``) run tini as PID 1
(their ENTRYPOINT): compose ``command:`` and Kubernetes ``args:`` keep it, compose
``entrypoint:`` and Kubernetes ``command:`` replace it. Other images have no init: compose gives
them the engine's (``init: true``), Kubernetes the pause container (``shareProcessNamespace:
true``, which makes it the pod's PID 1). An image is ours by its name (``fdl-serve/...``), by the
name a kustomization's ``images:`` gives one of ours (``kustomize edit set image
fdl-serve/gateway=REGISTRY/fdl-gateway:TAG``, docs/deploy.md), or, in compose, by a ``build:`` of
this repository's Dockerfile. tini runs with ``-s`` (a child subreaper): where it is not PID 1
(the model-config init container of a pod with ``shareProcessNamespace``, an engine's
``--init``), it otherwise warns at every start that zombie reaping won't work.

Read-only root: each container writes only to its volumes and to a writable ``/tmp`` (an
emptyDir, a compose tmpfs), which TensorFlow needs to start at all.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from deploy.lint.common import Errors
from deploy.lint.k8s_policy import Doc, pod_spec

OUR_IMAGES = "fdl-serve/"
INIT = ["/usr/bin/tini", "-s", "--"]
TMP = "/tmp"


def check_dockerfile(targets: dict[str, list[str] | None]) -> Errors:
    """Every target's ENTRYPOINT (``targets``: its argv, None without one) starts with tini."""
    return [
        f"Dockerfile: target {name}: ENTRYPOINT must start with {INIT} (tini as PID 1), not {argv}"
        for name, argv in targets.items()
        if argv is None or argv[: len(INIT)] != INIT
    ]


def image_name(image: str) -> str:
    """``image`` without its digest and tag (a registry's port stays)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def renamed_images(kustomizations: list[dict[str, Any]]) -> set[str]:
    """The names the kustomizations' ``images:`` give our images (``newName``)."""
    return {
        str(entry["newName"])
        for spec in kustomizations
        for entry in spec.get("images") or []
        if str(entry.get("name", "")).startswith(OUR_IMAGES) and entry.get("newName")
    }


def _keeps_init(
    image: str, replaced: list[Any] | None, renamed: Collection[str] = frozenset()
) -> bool:
    """An image of ours whose ENTRYPOINT (tini) is kept, or replaced by one that starts with it."""
    ours = OUR_IMAGES in image or image_name(image) in renamed
    return ours and (not replaced or list(replaced[: len(INIT)]) == INIT)


def check_k8s(docs: list[Doc], renamed: Collection[str] = frozenset()) -> Errors:
    """``renamed``: other names of our images (:func:`renamed_images`)."""
    errors: Errors = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        label = f"{doc['kind']} {doc['metadata']['name']}"
        shared = spec.get("shareProcessNamespace") is True
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            where = f"{label}/{container['name']}"
            image, command = container.get("image", ""), container.get("command")
            if not shared and not _keeps_init(image, command, renamed):
                errors.append(
                    f"{where}: PID 1 would be the program itself, which drops a SIGTERM it has "
                    "no handler for: run our images with args: (their ENTRYPOINT is tini), or "
                    "set shareProcessNamespace: true on the pod"
                )
            ctx = container.get("securityContext") or {}
            if ctx.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: securityContext.readOnlyRootFilesystem must be true")
            mounts = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == TMP]
            writable = [
                m
                for m in mounts
                if not m.get("readOnly") and "emptyDir" in (volumes.get(m.get("name")) or {})
            ]
            if not writable:
                errors.append(f"{where}: no emptyDir mounted writable at {TMP}")
    return errors


def _tmpfs(service: dict[str, Any]) -> list[str]:
    tmpfs = service.get("tmpfs") or []
    paths = [tmpfs] if isinstance(tmpfs, str) else [str(p) for p in tmpfs]
    for mount in service.get("volumes") or []:
        if isinstance(mount, dict) and mount.get("type") == "tmpfs":
            paths.append(str(mount.get("target")))
    return [p.split(":", 1)[0] for p in paths]


def check_compose(project: dict[str, Any], label: str) -> Errors:
    errors: Errors = []
    for name, service in (project.get("services") or {}).items():
        where = f"{label}: {name}"
        # A service built from this repository's Dockerfile runs one of our images, whatever
        # its image: name (a registry of your own).
        image = OUR_IMAGES if service.get("build") else str(service.get("image", ""))
        if service.get("init") is not True and not _keeps_init(image, service.get("entrypoint")):
            errors.append(
                f"{where}: PID 1 would be the program itself, which drops a SIGTERM it has no "
                "handler for: set init: true (or run one of our images without an entrypoint)"
            )
        if service.get("read_only") is not True:
            errors.append(f"{where}: read_only must be true (a read-only root filesystem)")
        if TMP not in _tmpfs(service):
            errors.append(f"{where}: no tmpfs at {TMP}")
    return errors
