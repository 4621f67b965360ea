"""The protocol-neutral data plane that every front end receives (as kserve's ``DataPlane``).

It resolves a model spec to a loaded version, answers metadata and status requests, applies a
new model config and records request metrics. The gRPC and REST front ends translate their wire
formats to and from these calls; the entry point (:mod:`serving.server`) builds one and hands it
to each front end's constructor.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.config_rules import check_model_list
from serving.errors import ServingError, invalid
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.predict import fill_model_spec
from serving.servable import Servable

INLINE_RUN_LIMIT_S = 0.002  # a Session run this short may block the event loop
SIGNATURE_DEF_FIELD = "signature_def"


class DataPlane:
    """Model resolution, metadata, status, reloads and metrics, shared by the front ends.

    Args:
        manager: the model manager that loads and serves the versions.
        metrics: the server's request and load metrics.
        metrics_path: the REST path of the Prometheus metrics, or None when they are off.
        tensor_content: answer gRPC ``Predict`` with ``tensor_content`` rather than typed fields.
    """

    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        metrics_path: str | None = None,
        tensor_content: bool = False,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.tensor_content = tensor_content
        self._reload_lock = threading.Lock()
        self._config: model_server_config_pb2.ModelServerConfig | None = None  # the one served
        self._configured: frozenset[str] = frozenset()  # its model names

    def resolve(self, name: str, version: int | None, label: str | None) -> Servable:
        """The loaded version a spec names, held until the caller calls ``release()`` on it."""
        return self.manager.resolve(name, version, label)

    def metadata(
        self, servable: Servable, fields: Iterable[str]
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """``GetModelMetadata``: the signature map of a resolved version."""
        wanted = list(fields)
        if not wanted:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for name in wanted:
            if name != SIGNATURE_DEF_FIELD:
                raise invalid(f"Metadata field {name} is not supported")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        fill_model_spec(response.model_spec, servable, None)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.signatures.items():
            signature_map.signature_def[key].CopyFrom(signature)
        packed = any_pb2.Any()
        packed.Pack(signature_map)
        response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(packed)
        return response

    def status(self, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
        """``GetModelStatus``: the state of one version, or of every version the server has
        known. A version label is not read, as TF Serving's ``get_model_status_impl.cc`` reads
        only ``version``: a spec with a label lists every version."""
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state, code, message in self.manager.status(name, version):
            item = response.model_version_status.add()
            item.version = number
            item.state = state
            item.status.error_code = code.value[0]
            item.status.error_message = message
        return response

    def load(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Apply the first config and wait until every model in it is available."""
        with self._reload_lock:
            self._apply(config)
            self.manager.wait_available([m.name for m in config.model_config_list.config])

    @property
    def config(self) -> model_server_config_pb2.ModelServerConfig | None:
        """The config served now (the last one applied, from a file or a ReloadConfig)."""
        return self._config

    def reload(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Apply a new ModelServerConfig and wait for its new models, as TF Serving's
        ``ServerCore::ReloadConfig`` (a polled config file, ``HandleReloadConfigRequest``)."""
        with self._reload_lock:
            kind = config.WhichOneof("config")
            if kind != "model_config_list":
                served = self._config.WhichOneof("config") if self._config else None
                if kind is None and served is None:
                    return  # "Taking no action for empty config.", until a first config
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "Cannot transition to requested config. It is only legal to transition "
                    "from one ModelConfigList to another.",
                )
            self.manager.wait_available(self._apply(config))

    def _apply(self, config: model_server_config_pb2.ModelServerConfig) -> list[str]:
        """TF Serving's checks (:mod:`serving.config_rules`), then the swap; the new models."""
        served = self._config.model_config_list if self._config is not None else None
        check_model_list(config.model_config_list, served)
        added = self.manager.apply_config(config)
        self._config = config
        self._configured = frozenset(model.name for model in config.model_config_list.config)
        return added

    def record(self, model: str, api: str, protocol: str, status: str, seconds: float) -> None:
        """Count one request (and time it when OK), as TF Serving's request metrics do. A model
        name no config names is counted as "": clients choose those names, and each one would
        otherwise stay a series of its own for the life of the process."""
        self.metrics.record(
            model if model in self._configured else "", api, protocol, status, seconds
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return self.metrics.exposition()
