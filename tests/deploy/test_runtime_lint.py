"""The PID 1 check (deploy/lint/runtime.py) knows our images under the names a registry of your
own gives them: docs/deploy.md has `kustomize edit set image fdl-serve/gateway=REGISTRY/...`
done before `kubectl apply -k`, and compose builds them from the Dockerfile whatever their
`image:`. Their ENTRYPOINT is tini all the same, so `args:` / `command:` keep it."""

from __future__ import annotations

from pathlib import Path

from deploy.lint import compose, k8s
from tests.deploy.test_lint import copy_tree, edit, needs_kubectl

REGISTRY = "registry.example.com:5000/team"


@needs_kubectl
def test_images_renamed_by_the_kustomization_keep_their_init(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    for image in ("gateway", "worker"):
        edit(
            root,
            "deploy/k8s/base/kustomization.yaml",
            f"  - name: fdl-serve/{image}\n    newTag: 0.1.0",
            f"  - name: fdl-serve/{image}\n    newName: {REGISTRY}/fdl-{image}\n    newTag: 0.1.0",
        )
    assert k8s.check(root) == []
    # The check still sees those pods: a command: that replaces tini there is refused.
    edit(
        root,
        "deploy/k8s/base/gateway.yaml",
        '          args: ["fdl-gateway"]',
        '          command: ["fdl-gateway"]',
    )
    errors = k8s.check(root)
    assert any("fdl-gateway/gateway: PID 1 would be the program itself" in e for e in errors), (
        errors
    )


def test_compose_services_built_here_keep_their_init(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    for image in ("gateway", "worker"):
        path = root / "deploy" / "compose.yaml"
        path.write_text(
            path.read_text().replace(
                f"image: fdl-serve/{image}:", f"image: {REGISTRY}/fdl-{image}:"
            )
        )
    assert compose.check(root) == []
