"""TF Serving's batching and monitoring configs: parsed as the text protos TF Serving reads.

The message definitions mirror TF Serving's ``BatchingParameters`` (session_bundle_config.proto)
and ``MonitoringConfig`` (monitoring_config.proto); an unknown field or a wrong type fails here as
it would fail the server at start.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from deploy.lint.common import K8S_DIR, SERVING_CONFIG_DIR, Errors, load_yaml_documents

_F = descriptor_pb2.FieldDescriptorProto
CONFIG_FILES = {"batching.config": "BatchingParameters", "monitoring.config": "MonitoringConfig"}
_BATCHING_FIELDS = [
    ("max_batch_size", 1, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, ".google.protobuf.StringValue"),
]


def _message_classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="fdl_lint/tf_serving_configs.proto",
        package="fdl_lint",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = proto.message_type.add(name="BatchingParameters")
    for name, number, type_name in _BATCHING_FIELDS:
        batching.field.add(
            name=name,
            number=number,
            label=_F.LABEL_OPTIONAL,
            type=_F.TYPE_MESSAGE,
            type_name=type_name,
        )
    batching.field.add(
        name="allowed_batch_sizes", number=6, label=_F.LABEL_REPEATED, type=_F.TYPE_INT64
    )
    batching.field.add(
        name="pad_variable_length_inputs", number=7, label=_F.LABEL_OPTIONAL, type=_F.TYPE_BOOL
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_BOOL)
    prometheus.field.add(name="path", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        label=_F.LABEL_OPTIONAL,
        type=_F.TYPE_MESSAGE,
        type_name=".fdl_lint.PrometheusConfig",
    )
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"fdl_lint.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def parse_config(kind: str, text: str) -> object:
    message = _message_classes()[kind]()
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
