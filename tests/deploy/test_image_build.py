"""The images' build steps, replayed here: what each target copies, builds and installs.

No Docker engine runs here, so the build context is laid out as the Dockerfile's COPY steps lay it
out (after .dockerignore) and the project is built into a wheel from it, first from the
dependency-only copy, then from the full one, as the ``pip install`` steps do.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from deploy.lint.dockerfile import dockerignored
from harness import containers as c
from harness.procs import REPO_ROOT

TARGETS = {
    "gateway-build": {"fdl", "api"},
    "worker": {"fdl", "api", "serving", "training"},
    "model-server": {"fdl", "serving"},
}


def ignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def copy_step(sources: list[str], dest: Path) -> None:
    patterns = ignore_patterns()
    for source in sources:
        path = REPO_ROOT / source
        if path.is_dir():
            shutil.copytree(
                path,
                dest / source,
                ignore=lambda d, names: [
                    n
                    for n in names
                    if dockerignored(str((Path(d) / n).relative_to(REPO_ROOT)), patterns)
                ],
            )
        else:
            assert not dockerignored(source, patterns), source
            shutil.copy2(path, dest / source)


def build_wheel(src: Path, out: Path) -> tuple[set[str], list[str]]:
    """Top-level packages in the wheel built from ``src`` (offline: no isolation, no deps)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    wheel.unlink()
    return {n.split("/")[0] for n in names if "/" in n and ".dist-info" not in n}, names


@pytest.mark.parametrize(("target", "packages"), list(TARGETS.items()))
def test_build_steps_install_the_right_packages(
    tmp_path: Path, target: str, packages: set[str]
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    copies = [
        i.args.split()[:-1]
        for i in c.stages()[target].instructions
        if i.keyword == "COPY" and not i.args.startswith("--")
    ]
    # Step 1: the dependency layer sees only the project metadata.
    assert copies[0] == ["pyproject.toml", "README.md"]
    copy_step(copies[0], src)
    top, _ = build_wheel(src, out)
    assert top == set()
    for sources in copies[1:]:
        copy_step(sources, src)
    top, names = build_wheel(src, out)
    assert top == packages
    assert "fdl/healthcheck.py" in names and "fdl/model_config.py" in names
    assert any(n.startswith("api/static/") for n in names) == ("api" in packages)
    assert not [n for n in names if "__pycache__" in n]


def test_gateway_image_has_no_tensorflow_dependency() -> None:
    """The gateway target installs the `api` extra, which must not pull TensorFlow."""
    build = c.stages()["gateway-build"]
    installs = [i.args for i in build.instructions if i.keyword == "RUN" and "install" in i.args]
    assert any('".[api]"' in a for a in installs)
    assert not any("training" in a or "serving]" in a for a in installs)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["api"]
    assert not [r for r in requirements if r.lower().startswith(("tensorflow", "keras"))]


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"training", "serving", "tensorflow", "keras"}:
            raise ImportError(f"the gateway image has no {name}")
sys.meta_path.insert(0, Block())
import api.main, api.__main__, fdl.model_config, fdl.healthcheck
print("ok")
"""


def test_gateway_image_modules_import_without_training_serving_or_tensorflow() -> None:
    """The gateway image has only fdl/ and api/ and no TensorFlow: its entry points still import."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
