"""Shared helpers: locating tools, loading YAML with Compose's merge tags, running commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = Path("deploy")
COMPOSE_FILES = (
    DEPLOY / "compose.yaml",
    DEPLOY / "compose.cpu.yaml",
    DEPLOY / "compose.model-server.yaml",
)
K8S_DIR = DEPLOY / "k8s"
SERVING_CONFIG_DIR = DEPLOY / "serving"

Errors = list[str]


def tool(name: str) -> str | None:
    """A console script of this environment (beside the interpreter) or else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def run_tool(argv: Sequence[str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    result = subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    return result.returncode, (result.stdout + result.stderr).strip()


class ComposeTag:
    """A value marked with Compose's ``!reset`` / ``!override`` merge tag."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag = tag
        self.value = value

    def __repr__(self) -> str:
        return f"{self.tag} {self.value!r}"


class _ComposeLoader(yaml.SafeLoader):
    pass


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> ComposeTag:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)  # type: ignore[arg-type]
    return ComposeTag(node.tag, value)


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _tagged)


def load_compose(path: Path) -> dict[str, Any]:
    """Load a Compose file; ``!reset``/``!override`` values become :class:`ComposeTag`."""
    data = yaml.load(path.read_text(), Loader=_ComposeLoader)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping")
    return data


def strip_tags(value: Any) -> Any:
    """The document as the Compose schema sees it (tags resolved to their plain values)."""
    if isinstance(value, ComposeTag):
        return strip_tags(value.value)
    if isinstance(value, dict):
        return {k: strip_tags(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_tags(v) for v in value]
    return value


def merge_compose(base: Any, override: Any) -> Any:
    """Compose's merge of an override file: mappings merge, ``!reset`` removes, others replace."""
    if isinstance(override, ComposeTag):
        return None if override.tag == "!reset" else strip_tags(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            result = merge_compose(base.get(key), value)
            if result is None and isinstance(value, ComposeTag):
                merged.pop(key, None)
            else:
                merged[key] = result
        return merged
    return strip_tags(override)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
