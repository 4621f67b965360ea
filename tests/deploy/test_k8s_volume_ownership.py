"""Pods that set ``fsGroup`` have their volumes chowned to it only when the volume's root is not
already that group (``fsGroupChangePolicy: OnRootMismatch``): the default, ``Always``, walks and
changes every file at each pod start, minutes for a large model repository."""

from __future__ import annotations

from deploy.lint.k8s_policy import pod_spec
from harness import containers as c


def test_every_pod_with_an_fs_group_changes_ownership_on_root_mismatch_only() -> None:
    grouped = {}
    for doc in c.k8s_docs():
        spec = pod_spec(doc)
        context = (spec or {}).get("securityContext") or {}
        if "fsGroup" in context:
            grouped[doc["metadata"]["name"]] = context.get("fsGroupChangePolicy")
    assert {"fdl-gateway", "fdl-serving", "fdl-worker"} <= set(grouped)
    assert grouped == dict.fromkeys(grouped, "OnRootMismatch")
