"""The manager's bookkeeping: options, one record per model version, one entry per model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.batching_config import Batching
from serving.errors import ServingError, not_found
from serving.servable import Servable
from serving.versions import Fingerprint

_STATE = get_model_status_pb2.ModelVersionStatus.State


class State:
    """``ModelVersionStatus.State`` values as plain ints: the protobuf enum wrapper resolves each
    attribute through a Python ``__getattr__``, which showed up on the request path."""

    START = _STATE.Value("START")
    LOADING = _STATE.Value("LOADING")
    AVAILABLE = _STATE.Value("AVAILABLE")
    UNLOADING = _STATE.Value("UNLOADING")
    END = _STATE.Value("END")


ModelConfig = model_server_config_pb2.ModelConfig


@dataclass
class ManagerOptions:
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    enable_warmup: bool = True
    warmup_iterations: int = 1  # --num_request_iterations_for_warmup
    allow_labels_for_unavailable: bool = False
    num_load_threads: int = 2
    session_config: Any = None
    tags: tuple[str, ...] = ("serve",)  # MetaGraph tags to load (--saved_model_tags)
    batching: Batching | None = None  # the server's (None: --enable_batching is off)
    per_model_batching: bool = False  # --enable_per_model_batching_parameters
    on_run: Callable[[str, float], None] | None = None  # (model, seconds) after each run
    on_warmup: Callable[[str, float, int], None] | None = None  # (version path, seconds, records)
    on_load: Callable[[str, bool, float], None] | None = None  # (version path, loaded, seconds)


@dataclass
class VersionRecord:
    version: int
    path: Path
    state: int = State.START
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    servable: Servable | None = None
    failed_fingerprint: Fingerprint | None = None


@dataclass
class ModelEntry:
    config: ModelConfig
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    removed: bool = False


def not_ready(entry: ModelEntry, what: str) -> ServingError:
    loading = any(r.state in (State.START, State.LOADING) for r in entry.versions.values())
    if loading:
        return ServingError(grpc.StatusCode.UNAVAILABLE, f"Servable {what} is still loading")
    return not_found(f"Servable not found for request: {what}")


def grpc_code(error: BaseException) -> grpc.StatusCode:
    code = getattr(error, "error_code", None)
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN
