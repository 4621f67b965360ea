"""The model server's configuration file (TF Serving's ``ModelServerConfig`` text format).

The model repository is the source of truth for which models exist: every folder under
``FDL_MODEL_DIR`` whose name is a valid model name is a model. Version labels (``stable``,
``canary``) are kept in ``<model_dir>/labels.json`` so that a restart keeps them. The file is
rendered here and written atomically; TF Serving and our compatible server both poll it
(``--model_config_file_poll_wait_seconds``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from fdl.jobspec import valid_name

LABELS_FILE = "labels.json"
CONFIG_FILE = "models.config"


def discover_models(model_dir: Path) -> list[str]:
    if not model_dir.is_dir():
        return []
    return sorted(p.name for p in model_dir.iterdir() if p.is_dir() and valid_name(p.name))


def list_versions(model_path: Path) -> list[int]:
    """Published versions of one model, ascending (integer-named folders only)."""
    if not model_path.is_dir():
        return []
    return sorted(int(p.name) for p in model_path.iterdir() if p.is_dir() and p.name.isdigit())


def read_labels(model_dir: Path) -> dict[str, dict[str, int]]:
    path = model_dir / LABELS_FILE
    if not path.exists():
        return {}
    return {
        m: {k: int(v) for k, v in labels.items()}
        for m, labels in json.loads(path.read_text()).items()
    }


def write_labels(model_dir: Path, labels: dict[str, dict[str, int]]) -> None:
    atomic_write(model_dir / LABELS_FILE, json.dumps(labels, indent=2, sort_keys=True) + "\n")


def render_config(
    model_dir: Path,
    labels: dict[str, dict[str, int]] | None = None,
    base_path_root: str | None = None,
) -> str:
    """Render the ``model_config_list``. ``base_path_root`` rewrites paths for a container."""
    labels = read_labels(model_dir) if labels is None else labels
    root = base_path_root or str(model_dir.resolve())
    blocks = []
    for name in discover_models(model_dir):
        model_labels = labels.get(name, {})
        lines = [
            "  config {",
            f'    name: "{name}"',
            f'    base_path: "{root.rstrip("/")}/{name}"',
            '    model_platform: "tensorflow"',
        ]
        if model_labels:
            # Labelled versions must stay loaded; the newest version is served beside them.
            versions = sorted(
                set(model_labels.values()) | set(list_versions(model_dir / name)[-1:])
            )
            lines.append("    model_version_policy {")
            lines.append("      specific {")
            lines += [f"        versions: {v}" for v in versions]
            lines.append("      }")
            lines.append("    }")
            for label, version in sorted(model_labels.items()):
                lines.append(f'    version_labels {{ key: "{label}" value: {version} }}')
        lines.append("  }")
        blocks.append("\n".join(lines))
    return "model_config_list {\n" + "\n".join(blocks) + ("\n" if blocks else "") + "}\n"


def sync_config(model_dir: Path, config_path: Path | None = None) -> Path:
    """(Re)write the config file beside the models; returns its path."""
    model_dir.mkdir(parents=True, exist_ok=True)
    config_path = config_path or model_dir / CONFIG_FILE
    text = render_config(model_dir)
    if not config_path.exists() or config_path.read_text() != text:
        atomic_write(config_path, text)
    return config_path


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """``python -m fdl.model_config [--model-dir DIR]``: write ``models.config`` for the model dir.

    Deployments run it once before TF Serving starts (which refuses a missing config file).
    """
    import argparse

    from fdl.settings import common_settings

    parser = argparse.ArgumentParser(prog="python -m fdl.model_config", description=main.__doc__)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: FDL_MODEL_DIR")
    args = parser.parse_args(argv)
    path = sync_config(args.model_dir or common_settings().model_dir)
    print(f"model config: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
