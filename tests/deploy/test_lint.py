"""The deployment checks pass on the real files and fail on broken copies of them."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from deploy.lint import compose, dockerfile, k8s, k8s_disruption, serving_config
from deploy.lint.common import Errors
from harness.procs import REPO_ROOT

CHECKS: dict[str, Callable[[Path], Errors]] = {
    "dockerfile": dockerfile.check,
    "compose": compose.check,
    "serving-config": serving_config.check,
    "k8s": k8s.check,
}
needs_kubectl = pytest.mark.skipif(
    not k8s.kustomize_available(), reason="platform: kubectl (kustomize) not on PATH"
)


def copy_tree(dest: Path) -> Path:
    """The files the checks read: Dockerfile, .dockerignore, pyproject, README, deploy/."""
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    shutil.copytree(
        REPO_ROOT / "deploy",
        dest / "deploy",
        ignore=shutil.ignore_patterns("__pycache__", "lint", ".env"),
    )
    for package in ("fdl", "api", "serving", "training"):
        (dest / package).mkdir()
    return dest


def edit(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}: the mutation no longer applies"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("name", list(CHECKS))
def test_real_files_pass(name: str) -> None:
    assert CHECKS[name](REPO_ROOT) == []


def test_copy_of_the_tree_passes(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    for name, check in CHECKS.items():
        assert check(root) == [], name


MUTATIONS = yaml.safe_load((Path(__file__).parent / "mutations.yaml").read_text())


@pytest.mark.parametrize(
    "mutation",
    MUTATIONS,
    ids=[f"{m['check']}:{m['file'].split('/')[-1]}:{m['error'][:30]}" for m in MUTATIONS],
)
def test_broken_copy_fails(tmp_path: Path, mutation: dict[str, str]) -> None:
    root = copy_tree(tmp_path)
    edit(root, mutation["file"], mutation["old"], mutation["new"])
    errors = CHECKS[mutation["check"]](root)
    assert any(mutation["error"] in e for e in errors), errors


def test_compose_service_without_healthcheck_fails_its_dependants(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    path = root / "deploy" / "compose.yaml"
    document = yaml.safe_load(path.read_text())
    del document["services"]["redis"]["healthcheck"]
    path.write_text(yaml.safe_dump(document))
    errors = compose.check(root)
    assert any("waits for redis to be healthy; it has no healthcheck" in e for e in errors), errors


def gpu_patch_errors(tmp_path: Path, old: str, new: str) -> Errors:
    """The k8s check's errors on a copy whose GPU overlay patch has ``old`` replaced by ``new``."""
    root = copy_tree(tmp_path)
    edit(root, "deploy/k8s/overlays/gpu/worker-gpu.yaml", old, new)
    return k8s.check(root)


@needs_kubectl
def test_broken_kustomize_patch_fails_the_build(tmp_path: Path) -> None:
    errors = gpu_patch_errors(tmp_path, "      tolerations:", "      tolerations: [")
    assert any("kubectl kustomize gpu" in e for e in errors), errors


@needs_kubectl
def test_kustomize_output_is_validated(tmp_path: Path) -> None:
    """A patch that is fine on its own but yields an invalid Deployment fails the build check."""
    errors = gpu_patch_errors(
        tmp_path, "      nodeSelector:", "      nodeSelectr:\n        a: b\n      nodeSelector:"
    )
    assert any("kustomize build of gpu" in e and "nodeSelectr" in e for e in errors), errors


def test_missing_k8s_tree_fails(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    shutil.rmtree(root / "deploy" / "k8s" / "overlays")
    assert k8s.check(root) != []


def test_script_exit_status(tmp_path: Path) -> None:
    script = REPO_ROOT / "scripts" / "lint-deploy.sh"
    env_python = {"PYTHON": sys.executable, "VIRTUAL_ENV": str(Path(sys.executable).parents[1])}
    ok = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**_base_env(), **env_python},
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("ok   ") == len(CHECKS)
    root = copy_tree(tmp_path)
    edit(root, "deploy/compose.yaml", "    image: redis:7.4.2-alpine", "    imag: redis")
    bad = subprocess.run(
        ["bash", str(script), "--root", str(root), "compose"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**_base_env(), **env_python},
        check=False,
    )
    assert bad.returncode == 1
    assert "FAIL compose" in bad.stdout


def _base_env() -> dict[str, str]:
    return dict(os.environ)


def test_env_example_covers_the_compose_variables() -> None:
    """Every variable the compose files read is documented in deploy/env.example, and back."""
    text = "".join(
        (REPO_ROOT / "deploy" / n).read_text()
        for n in ("compose.yaml", "compose.cpu.yaml", "compose.model-server.yaml")
    )
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    example = (REPO_ROOT / "deploy" / "env.example").read_text()
    documented = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))
    assert used == documented
    values = dict(re.findall(r"^(\w+)=(.*)$", example, flags=re.MULTILINE))
    with pytest.raises(ValueError, match="FDL_REDIS_PASSWORD"):
        compose.interpolate(text, values)
    # Every variable resolved (the shell's own "$${#VAR}" in redis's command stays "${#VAR}").
    resolved = compose.interpolate(text, {**values, "FDL_REDIS_PASSWORD": "k"})
    assert not re.search(r"\$\{\w", resolved)


def test_batching_fields_the_server_accepts_pass(tmp_path: Path) -> None:
    """Fields 8 and 9 of BatchingParameters (large batch splitting) are the server's too."""
    root = copy_tree(tmp_path)
    config = root / "deploy" / "serving" / "batching.config"
    extra = "enable_large_batch_splitting { value: true }\nmax_execution_batch_size { value: 32 }\n"
    config.write_text(config.read_text() + extra)
    k8s_config = root / "deploy" / "k8s" / "base" / "config.yaml"
    documents = list(yaml.safe_load_all(k8s_config.read_text()))
    for document in documents:
        if document and document["metadata"]["name"] == "fdl-serving-config":
            document["data"]["batching.config"] = config.read_text()
    k8s_config.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    assert serving_config.check(root) == []


def test_shutdown_bounds_match_the_servers() -> None:
    """The k8s check's shutdown times (SHUTDOWN_S, which terminationGracePeriodSeconds must cover
    after the preStop pause) cover the gateway's uvicorn graceful shutdown and the model server's
    shutdown deadline, as their sources set them."""

    def constants(relative: str) -> dict[str, object]:
        tree = ast.parse((REPO_ROOT / relative).read_text())
        found: dict[str, object] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg and isinstance(keyword.value, ast.Constant):
                        found[keyword.arg] = keyword.value.value
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = node.value.value
        return found

    graceful = constants("api/settings.py")["SHUTDOWN_GRACE_S"]  # FDL_SHUTDOWN_GRACE_S's most
    probe = constants("api/probe.py")["SHUTDOWN_S"]  # the probe listener stops first
    deadline = constants("serving/__main__.py")["SHUTDOWN_DEADLINE_S"]
    assert isinstance(graceful, int | float) and isinstance(deadline, int | float)
    assert isinstance(probe, int | float)
    assert k8s_disruption.SHUTDOWN_S["fdl-gateway"] >= probe + graceful
    assert k8s_disruption.SHUTDOWN_S["fdl-serving"] >= deadline
