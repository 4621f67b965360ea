"""The workers' training checkpoints (FDL_CHECKPOINT_DIR) are on storage all of them share.

A job handed back by a stopping worker, or lost with it, resumes from its last epoch on whichever
worker takes it next: only if that worker finds the checkpoint (deploy/lint/checkpoints.py, whose
broken copies are in mutations.yaml). The volumes the worker's image writes are created in the
image and owned by its user, which a new named volume copies (Docker, podman).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from deploy.lint.common import REPO_ROOT, load_compose, merge_compose
from harness import containers as c

CHECKPOINTS = "/checkpoints"
# To go once the worker stage of the Dockerfile makes and chowns /checkpoints as /data (strict:
# the test then passes, and the mark fails it). Until then Docker creates the volume owned by root,
# and the worker, which cannot write it, refuses to start.


def _worker_mounts(project: dict[str, Any]) -> dict[str, str]:
    """Target -> source of the worker's writable volume mounts (short syntax)."""
    mounts = {}
    for mount in project["services"]["worker"].get("volumes") or []:
        source, target, *options = str(mount).split(":")
        if "ro" not in ",".join(options).split(","):
            mounts[target] = source
    return mounts


def test_compose_workers_share_one_named_checkpoint_volume() -> None:
    cpu = load_compose(REPO_ROOT / "deploy" / "compose.cpu.yaml")
    for project in (c.compose(), merge_compose(c.compose(), cpu)):
        worker = project["services"]["worker"]
        assert worker["environment"]["FDL_CHECKPOINT_DIR"] == CHECKPOINTS
        assert _worker_mounts(project).get(CHECKPOINTS) == "checkpoints"
        assert "checkpoints" in project["volumes"]
        # `up --scale worker=N`: replicas need no fixed name; each mounts the same volume.
        assert "container_name" not in worker


def test_k8s_worker_pods_share_a_read_write_many_checkpoint_claim() -> None:
    pod = c.k8s_pod("Deployment", "fdl-worker")
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FDL_CHECKPOINT_DIR"] == CHECKPOINTS
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CHECKPOINTS)
    assert not mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert claim == "fdl-checkpoints"
    pvc = next(
        d
        for d in c.k8s_docs()
        if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim
    )
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # Written as the pod's fsGroup, chowned only when its root is not that group yet.
    context = pod["securityContext"]
    assert context["fsGroup"] == context["runAsGroup"]
    assert context["fsGroupChangePolicy"] == "OnRootMismatch"


def _image_owned_folders(target: str) -> set[str]:
    """Folders a Dockerfile target creates (mkdir) and chowns to the user it runs as."""
    stage = c.stages()[target]
    user = stage.last("USER")
    assert user is not None
    made: set[str] = set()
    owned: set[str] = set()
    for ins in stage.instructions:
        if ins.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", ins.args):
            words = shlex.split(command)
            if words[:1] == ["mkdir"]:
                made |= {w for w in words[1:] if not w.startswith("-")}
            elif words[:1] == ["chown"] and len(words) > 2 and words[1] == user.args:
                owned |= set(words[2:])
    return made & owned


@pytest.mark.parametrize("target", _worker_mounts(c.compose()))
def test_the_worker_image_owns_each_volume_it_writes(target: str) -> None:
    """A new named volume takes the ownership of the image's folder at its mount point; where the
    image has none, Docker leaves it root's, and the worker (uid 10001) cannot write it."""
    assert target in _image_owned_folders("worker")
