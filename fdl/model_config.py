"""Render the model server's configuration file (TF Serving's ``ModelServerConfig`` text format).

The file is a :class:`fdl.wire.tfs_pb2.ModelServerConfig` message written by ``text_format``.

Rendering is pure: :mod:`fdl.repository` gathers the models, versions and labels from disk and
writes the result under its lock. Whatever is rendered is checked before it can be written: a
model server that cannot parse ``models.config`` applies no later change and refuses to restart,
so a name or path that would break the file is refused here, not discovered there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from google.protobuf import text_format
from google.protobuf.message import Message

from fdl.base_paths import uri_is_relative_path
from fdl.jobspec import NAME_PATTERN
from fdl.wire.tfs_pb2 import ModelConfig, ModelServerConfig

# A base path is written between double quotes; these characters would need escaping.
_UNSAFE_PATH = re.compile(r'["\\\x00-\x1f\x7f]')


class ConfigRenderError(ValueError):
    """The config would not parse back; nothing was written."""


def valid_name(name: str) -> bool:
    """A model or label name, matched in full (a trailing newline is not a name)."""
    return re.fullmatch(NAME_PATTERN, name) is not None


def valid_label(label: str) -> bool:
    """A label is a name that does not read as a version number."""
    return valid_name(label) and not label.isdigit()


def render(
    root: str,
    models: Mapping[str, Sequence[int]],
    labels: Mapping[str, Mapping[str, int]],
    keep: Mapping[str, set[int]] | None = None,
) -> str:
    """The ``model_config_list`` for ``models`` (name -> versions on disk, ascending).

    A model with labels serves its labelled versions and its newest one (a ``specific`` policy;
    ``keep`` adds versions that must stay loaded, e.g. one being promoted); one without labels
    serves TF Serving's default, its latest version.
    """
    _refuse(models, labels, root)  # before building: a bad label must not reach the message
    config = ModelServerConfig()
    config.model_config_list.SetInParent()  # an empty list still renders as a list
    for name in sorted(models):
        model = config.model_config_list.config.add(
            name=name, base_path=base_path(root, name), model_platform="tensorflow"
        )
        model_labels = labels.get(name, {})
        extra = set((keep or {}).get(name, set()))
        if model_labels or extra:
            versions = sorted(set(model_labels.values()) | set(models[name][-1:]) | extra)
            model.model_version_policy.specific.versions.extend(versions)
            for label, version in sorted(model_labels.items()):
                model.version_labels[label] = version
    text = config_text(config)
    check(text, models, labels, root)
    return text


def base_path(root: str, name: str) -> str:
    """The folder of model ``name`` as the model server is to find it under ``root``."""
    return f"{root.rstrip('/')}/{name}"


def config_text(config: ModelServerConfig) -> str:
    """``config`` as the file holds it: one model a line (:func:`_one_line`)."""
    return text_format.MessageToString(config, message_formatter=_one_line)


def check(
    text: str,
    models: Mapping[str, Sequence[int]],
    labels: Mapping[str, Mapping[str, int]],
    root: str,
) -> None:
    """Refuse a config that would not parse back into exactly the models and labels given."""
    _refuse(models, labels, root)
    parsed = _parse(text)
    if sorted(parsed) != sorted(models):
        raise ConfigRenderError(f"the rendered config parses back to models {sorted(parsed)}")


def _refuse(
    models: Mapping[str, Sequence[int]], labels: Mapping[str, Mapping[str, int]], root: str
) -> None:
    """Names, labels and a base path root that the model server could not be trusted with."""
    for name in models:
        if not valid_name(name):
            raise ConfigRenderError(f"model name {name!r} is not a valid name")
    for name, model_labels in labels.items():
        for label, version in model_labels.items():
            if not valid_label(label):
                raise ConfigRenderError(f"label {label!r} of model {name!r} is not a valid name")
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise ConfigRenderError(f"label {label!r} of {name!r} names no version")
    if _UNSAFE_PATH.search(root):
        raise ConfigRenderError(f"base path root {root!r} has a quote, backslash or control")
    if uri_is_relative_path(root):  # the model server would refuse every poll and reload
        raise ConfigRenderError(
            f"base path root {root!r} is relative, and the model server (as TF Serving) refuses "
            "relative base paths: set FDL_SERVING_MODEL_BASE_PATH to an absolute path or a URI "
            "(gs://bucket/models)"
        )


def _one_line(message: Message, indent: int, as_one_line: bool) -> str | None:
    """Each model's fields on one line (labels read ``version_labels { key: "x" value: 1 }``),
    so that the file reads one model per line."""
    if isinstance(message, ModelConfig) and not as_one_line:
        return text_format.MessageToString(message, as_one_line=True)
    return None


def _parse(text: str) -> list[str]:
    """The model names ``text`` parses back to."""
    try:
        config = text_format.Parse(text, ModelServerConfig())
    except text_format.ParseError as error:
        raise ConfigRenderError(f"the rendered config does not parse: {error}") from error
    return [m.name for m in config.model_config_list.config]
