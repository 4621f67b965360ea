"""Kubernetes manifests: kustomizations, the Kubernetes schemas, kustomize builds."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from deploy.lint import (
    checkpoints,
    credentials,
    env_names,
    k8s_disruption,
    k8s_policy,
    probes,
    runtime,
)
from deploy.lint.common import K8S_DIR, Errors, load_yaml_documents, run_tool, tool

KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests support


def kustomization_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in (root / K8S_DIR).rglob("kustomization.yaml"))


def kustomization_files(kdir: Path) -> tuple[list[Path], Errors]:
    """The plain manifest files a kustomization lists (resources), checking every path exists."""
    errors: Errors = []
    files: list[Path] = []
    spec = yaml.safe_load((kdir / "kustomization.yaml").read_text()) or {}
    for entry in spec.get("resources") or []:
        path = kdir / entry
        if path.is_dir():
            if not (path / "kustomization.yaml").exists():
                errors.append(f"{kdir.name}/kustomization.yaml: {entry} has no kustomization.yaml")
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"{kdir.name}/kustomization.yaml: resource {entry} does not exist")
    for patch in spec.get("patches") or []:
        if "path" in patch and not (kdir / patch["path"]).is_file():
            errors.append(f"{kdir.name}/kustomization.yaml: patch {patch['path']} does not exist")
    listed = set(files) | {kdir / p.get("path", "") for p in spec.get("patches") or []}
    for stray in sorted(kdir.glob("*.yaml")):
        if stray.name != "kustomization.yaml" and stray not in listed:
            errors.append(f"{stray.relative_to(kdir.parent)}: not listed in its kustomization")
    return files, errors


def validate(paths: list[Path], cwd: Path) -> Errors:
    """Every document against the Kubernetes OpenAPI schemas, unknown fields rejected."""
    validator = tool("kubernetes-validate")
    if validator is None:
        return ["kubernetes-validate not found (pip install kubernetes-validate)"]
    if not paths:
        return ["no Kubernetes manifests to validate"]
    argv = [validator, "--strict", "--quiet", "-k", KUBERNETES_VERSION, *map(str, paths)]
    code, output = run_tool(argv, cwd=cwd)
    return [f"kubernetes-validate:\n{output}"] if code != 0 else []


def build(kdir: Path) -> tuple[list[dict[str, Any]], Errors]:
    kubectl = tool("kubectl")
    if kubectl is None:
        return [], []
    code, output = run_tool([kubectl, "kustomize", str(kdir)], cwd=kdir)
    if code != 0:
        return [], [f"kubectl kustomize {kdir.name}: {output}"]
    return [d for d in yaml.safe_load_all(output) if d], []


def check(root: Path) -> Errors:
    root = root.resolve()
    kdirs = kustomization_dirs(root)
    if not any(d.name == "base" for d in kdirs) or not any(d.name == "gpu" for d in kdirs):
        return [f"expected kustomizations {K8S_DIR}/base and {K8S_DIR}/overlays/gpu"]
    errors: Errors = []
    rendered: dict[str, list[dict[str, Any]]] = {}
    manifests: list[Path] = []
    for kdir in kdirs:
        files, problems = kustomization_files(kdir)
        manifests += files
        errors += problems
        docs, problems = build(kdir)
        errors += problems
        if docs:
            rendered[kdir.name] = docs
    with tempfile.TemporaryDirectory() as tmp:
        # Each build output under its own name, all validated in one run of the validator.
        builds = {}
        for name, docs in rendered.items():
            out = Path(tmp) / f"kustomize build of {name}.yaml"
            out.write_text(yaml.safe_dump_all(docs))
            builds[str(out)] = f"kustomize build of {name}"
        for error in validate(sorted(set(manifests)) + [Path(p) for p in builds], root):
            for path, label in builds.items():
                error = error.replace(path, label)
            errors.append(error)
    if errors:
        return errors
    base_docs = rendered.get("base") or [
        doc
        for f in kustomization_files(root / K8S_DIR / "base")[0]
        for doc in load_yaml_documents(f)
    ]
    errors += k8s_policy.check_all(base_docs, root) + k8s_disruption.check_all(base_docs)
    errors += credentials.check_k8s(base_docs) + probes.check_k8s(base_docs)
    # Our images under the names the kustomizations give them (a registry of your own).
    renamed = runtime.renamed_images(
        [yaml.safe_load((d / "kustomization.yaml").read_text()) or {} for d in kdirs]
    )
    errors += runtime.check_k8s(base_docs, renamed) + env_names.check_k8s(base_docs)
    errors += checkpoints.check_k8s(base_docs)
    gpu_docs = rendered.get("gpu") or [
        doc
        for f in (root / K8S_DIR / "overlays" / "gpu").glob("*.yaml")
        if f.name != "kustomization.yaml"
        for doc in load_yaml_documents(f)
    ]
    errors += [f"gpu overlay: {e}" for e in k8s_policy.check_gpu_worker(gpu_docs)]
    if "gpu" in rendered:
        gpu = k8s_policy.check_all(gpu_docs, root) + k8s_disruption.check_all(gpu_docs)
        gpu += credentials.check_k8s(gpu_docs) + probes.check_k8s(gpu_docs)
        gpu += runtime.check_k8s(gpu_docs, renamed) + env_names.check_k8s(gpu_docs)
        gpu += checkpoints.check_k8s(gpu_docs)
        errors += [f"gpu overlay: {e}" for e in gpu]
    return errors


def kustomize_available() -> bool:
    return tool("kubectl") is not None
