"""TF Serving's batching and monitoring configs: parsed as the text protos TF Serving reads.

The messages are the model server's own (``fdl/wire/serving_config.proto``, TF Serving's
``BatchingParameters`` and ``MonitoringConfig``); an unknown field or a wrong type fails here as
it fails the server at start, and every field the server accepts passes.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from deploy.lint.common import K8S_DIR, SERVING_CONFIG_DIR, Errors, load_yaml_documents
from fdl.wire import serving_config_pb2

CONFIG_FILES = {"batching.config": "BatchingParameters", "monitoring.config": "MonitoringConfig"}


def parse_config(kind: str, text: str) -> object:
    message = getattr(serving_config_pb2, kind)()
    text_format.Parse(text, message)
    return message


def semantic_errors(name: str, message: object) -> Errors:
    errors: Errors = []
    if name == "batching.config":
        max_batch = message.max_batch_size.value  # type: ignore[attr-defined]
        sizes = list(message.allowed_batch_sizes)  # type: ignore[attr-defined]
        if max_batch < 1 or message.num_batch_threads.value < 1:  # type: ignore[attr-defined]
            errors.append("batching.config: max_batch_size and num_batch_threads must be >= 1")
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != max_batch):
            errors.append("batching.config: allowed_batch_sizes must rise to max_batch_size")
    else:
        prometheus = message.prometheus_config  # type: ignore[attr-defined]
        if not prometheus.enable or not prometheus.path.startswith("/"):
            errors.append("monitoring.config: Prometheus must be enabled on an absolute path")
    return errors


def check(root: Path) -> Errors:
    errors: Errors = []
    texts: dict[str, str] = {}
    for name, kind in CONFIG_FILES.items():
        path = root / SERVING_CONFIG_DIR / name
        if not path.exists():
            errors.append(f"missing {path}")
            continue
        texts[name] = path.read_text()
        try:
            errors += semantic_errors(name, parse_config(kind, texts[name]))
        except text_format.ParseError as error:
            errors.append(f"{name}: {error}")
    configmaps = (
        [
            doc
            for doc in load_yaml_documents(root / K8S_DIR / "base" / "config.yaml")
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "fdl-serving-config"
        ]
        if (root / K8S_DIR / "base" / "config.yaml").exists()
        else []
    )
    if not configmaps:
        errors.append("k8s: no ConfigMap fdl-serving-config in deploy/k8s/base/config.yaml")
    else:
        data = configmaps[0].get("data") or {}
        for name, text in texts.items():
            if data.get(name) != text:
                errors.append(f"k8s ConfigMap fdl-serving-config: {name} differs from {name} file")
    return errors
