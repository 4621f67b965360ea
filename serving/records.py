"""The manager's bookkeeping: options, one record per model version, one entry per model."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.batching_config import Batching
from serving.errors import ServingError, invalid, not_found
from serving.servable import Servable
from serving.versions import Fingerprint

_STATE = get_model_status_pb2.ModelVersionStatus.State


class State:
    """``ModelVersionStatus.State`` values as plain ints: the protobuf enum wrapper resolves each
    attribute through a Python ``__getattr__``, a cost on the request path."""

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


# (version, state, error code, error message), as GetModelStatus reports a version.
StatusRow = tuple[int, int, grpc.StatusCode, str]


@dataclass
class ModelEntry:
    """One model of the config: its version records and labels (read under the manager's lock).
    The lookups raise the errors TF Serving answers with."""

    config: ModelConfig
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    removed: bool = False
    # The version folders of the newest scan of the base path applied and the versions the
    # policy aspires of them, and the tickets of the scans started and applied: a scan runs
    # outside the lock, and one older than the applied one is dropped.
    on_disk: dict[int, Path] = field(default_factory=dict)
    aspired: set[int] = field(default_factory=set)
    scans_started: int = 0
    scan_applied: int = 0

    def loading(self) -> bool:
        """No version is available yet and one is still loading."""
        states = [r.state for r in self.versions.values()]
        return State.AVAILABLE not in states and any(
            s in (State.START, State.LOADING) for s in states
        )

    def load_errors(self, name: str) -> str | None:
        """Why each version failed, when versions exist and none is available."""
        if not self.versions or any(r.state == State.AVAILABLE for r in self.versions.values()):
            return None
        return ", ".join(
            f"{{name: {name} version: {r.version}}} due to error: {r.error_message}"
            for r in self.versions.values()
        )

    def labelled(self, label: str) -> int:
        """The version a label points at (TF Serving: INVALID_ARGUMENT for an unknown label)."""
        if label not in self.labels:
            raise invalid(f"Unrecognized servable version label: {label}")
        return self.labels[label]

    def servable(self, name: str, version: int | None, label: str | None) -> Servable:
        """The servable a request names (by label, number, or the newest available)."""
        if label is not None:  # an empty label is looked up too, as in TF Serving
            version = self.labelled(label)
        if version is None:
            available = [v for v, r in self.versions.items() if r.state == State.AVAILABLE]
            if not available:
                raise not_ready(self, f"Latest({name})")
            version = max(available)
        record = self.versions.get(version)
        if record is None or record.state != State.AVAILABLE or record.servable is None:
            if record is not None and record.state in (State.START, State.LOADING):
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"Servable {name} version {version} is still loading",
                )
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return record.servable


def checked_labels(
    entry: ModelEntry | None, name: str, model: ModelConfig, allow_unavailable: bool
) -> dict[str, int]:
    """A new config's labels of one model, if each may point where it does: at an AVAILABLE
    version (with ``allow_unavailable`` a new label may point anywhere, but moving an existing
    label still needs an available version)."""
    current = entry.labels if entry else {}
    for label, version in model.version_labels.items():
        if allow_unavailable and current.get(label, version) == version:
            continue
        record = entry.versions.get(version) if entry else None
        if record is None or record.state != State.AVAILABLE:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Request to assign label to version {version} of model {name}, "
                "which is not currently available for inference",
            )
    return dict(model.version_labels)


def unknown_model(name: str, version: int | None, label: str | None) -> ServingError:
    """A spec naming a model not in the config, as TF Serving answers it: a label is looked up
    first (``server_core.cc``, ``ServableRequestFromModelSpec``), and the request is named as
    ``ServableRequest::DebugString`` prints it (``core/manager.h``)."""
    if label is not None:
        return invalid(f"Unrecognized servable version label: {label}")
    wanted = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
    return not_found(f"Servable not found for request: {wanted}")


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


# GetModelStatus keeps reporting versions that ended: the last this many of each model, of the
# models in the config and of the last RETIRED_MODELS removed from it (TF Serving keeps all).
RETIRED_PER_MODEL = 32
RETIRED_MODELS = 256


class RetiredVersions:
    """Versions that left their model's live records, kept for GetModelStatus.

    TF Serving answers GetModelStatus from its ``ServableStateMonitor``, which stores the last
    state of every version it ever saw and never drops one (``servable_state_monitor.cc``:
    ``HandleEvent`` writes ``states_``, ``ForgetUnloadedServableStates`` has no caller): a
    version unloaded because its folder was deleted or the version policy dropped it, and every
    version of a model removed from the config, stay listed as ``END``. Here the manager hands
    such records over (unloaded and no longer aspired, or of a removed model) and this keeps the
    last ``RETIRED_PER_MODEL`` of each model, so a model repository that churns versions (or a
    config that churns model names: ``RETIRED_MODELS`` removed models) cannot grow memory
    without bound. Records are shared, so one still unloading turns ``END`` here too.
    """

    def __init__(self) -> None:
        self._models: OrderedDict[str, OrderedDict[int, VersionRecord]] = OrderedDict()

    def add(self, name: str, records: Iterable[VersionRecord], live: Container[str]) -> None:
        """Keep ``records`` of model ``name``; ``live``: the models of the current config."""
        versions = self._models.setdefault(name, OrderedDict())
        self._models.move_to_end(name)
        for record in records:
            versions.pop(record.version, None)
            versions[record.version] = record
        while len(versions) > RETIRED_PER_MODEL:
            versions.popitem(last=False)
        removed = [n for n in self._models if n not in live]
        for gone in removed[: max(0, len(removed) - RETIRED_MODELS)]:
            del self._models[gone]

    def take_ended(
        self,
        name: str,
        versions: dict[int, VersionRecord],
        aspired: Container[int],
        live: Container[str],
    ) -> None:
        """Move a live model's records that have ended and are no longer aspired here."""
        ended = [r for v, r in versions.items() if v not in aspired and r.state == State.END]
        for record in ended:
            del versions[record.version]
        if ended:
            self.add(name, ended, live)

    def records(self, name: str) -> Mapping[int, VersionRecord]:
        return self._models.get(name, {})


def status_rows(
    name: str, records: Mapping[int, VersionRecord], version: int | None
) -> list[StatusRow]:
    """GetModelStatus's answer from the records of a model's versions: one version or all,
    newest first; NOT_FOUND with TF Serving's texts (``get_model_status_impl.cc``)."""
    if version is not None:
        record = records.get(version)
        if record is None:
            raise not_found(f"Could not find version {version} of model {name}")
        chosen = [record]
    else:
        chosen = sorted(records.values(), key=lambda r: -r.version)
        if not chosen:
            raise not_found(f"Could not find any versions of model {name}")
    return [(r.version, r.state, r.error_code, r.error_message) for r in chosen]
