"""The TensorBoard service runs an image that has its command.

It ran ``tensorboard`` from ``tensorflow/tensorflow:2.21.0``, whose TensorFlow no longer requires
tensorboard (the 2.21 wheel's Requires-Dist has none, and the image adds none): the command was
missing and the service restarted in a loop. tests/deploy/test_services.py runs the command here,
where the dev venv has tensorboard, which could not show that. Here the image is followed to what
installs the command: the service must be built from a target of our Dockerfile whose ``pip
install`` steps install an extra of pyproject.toml that requires a distribution providing the
command as a console script, into the venv at the head of the image's PATH.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib.metadata import distribution
from typing import Any

import pytest
from packaging.requirements import Requirement

from deploy.lint.common import load_compose, merge_compose
from deploy.lint.runtime import INIT
from harness import containers as c
from harness.procs import REPO_ROOT

# A `pip install` argument that names this project with extras: ".[training]", '.[a,b]'.
_PROJECT_EXTRAS = re.compile(r"^\.\[([\w,\s-]+)\]$")


def projects() -> dict[str, dict[str, Any]]:
    """The services of compose.yaml alone and with compose.cpu.yaml."""
    base = c.compose()
    cpu = merge_compose(base, load_compose(REPO_ROOT / "deploy" / "compose.cpu.yaml"))
    return {"compose.yaml": base["services"], "compose.yaml + compose.cpu.yaml": cpu["services"]}


def installed_extras(target: str) -> set[str]:
    """The extras of this project that the target's RUN steps ``pip install``."""
    extras: set[str] = set()
    for ins in c.stages()[target].instructions:
        if ins.keyword != "RUN":
            continue
        for command in re.split(r"&&|;", ins.args):
            words = shlex.split(command)
            if "pip" in words and "install" in words:
                for word in words[words.index("install") + 1 :]:
                    if match := _PROJECT_EXTRAS.match(word):
                        extras |= {e.strip() for e in match[1].split(",")}
    return extras


def console_scripts(extras: set[str]) -> dict[str, str]:
    """The console scripts of the distributions ``extras`` require (from the dev venv, where they
    are installed at the pinned versions), by name: their distribution."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    scripts = {}
    for extra in extras:
        for line in project["optional-dependencies"][extra]:
            name = Requirement(line).name
            for entry in distribution(name).entry_points.select(group="console_scripts"):
                scripts[entry.name] = name
    return scripts


@pytest.mark.parametrize("label", list(projects()))
def test_tensorboard_image_installs_its_command(label: str) -> None:
    services = projects()[label]
    service = services["tensorboard"]
    command = c.command("tensorboard")
    assert "entrypoint" not in service, "keep the image's ENTRYPOINT, tini"
    build = service.get("build")
    assert build and build.get("target") in c.stages(), (
        f"{label}: tensorboard runs {service['image']!r}, not an image of our Dockerfile; "
        "tensorflow/tensorflow images have no tensorboard since TF 2.21"
    )
    target = build["target"]
    entrypoint = c.stages()[target].last("ENTRYPOINT")
    assert entrypoint is not None and entrypoint.argv()[: len(INIT)] == INIT
    scripts = console_scripts(installed_extras(target))
    assert command[0] in scripts, f"target {target} installs no {command[0]!r} command"
    path = c.stages()[target].env()["PATH"]
    assert path.startswith("/opt/venv/bin:"), path  # where the target's pip installs go
    # The worker's image, built the same way: one image, which the worker makes first.
    worker = services["worker"]
    assert service["image"] == worker["image"]
    assert build == worker["build"]
