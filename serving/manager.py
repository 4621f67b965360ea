"""Model lifecycle: aspired versions, loading (retries, warmup), labels and unloading.

Availability is preserved as in TF Serving: a new version serves only once it has loaded and
warmed up, and the versions it replaces are unloaded only then. A failed load keeps the old
version serving; it is retried ``max_num_load_retries`` times, and again whenever the files of
that version folder change (so an export still being written never wedges the server).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError
from serving.loading import load_version
from serving.records import (
    ManagerOptions,
    ModelEntry,
    RetiredVersions,
    State,
    StatusRow,
    VersionRecord,
    checked_labels,
    grpc_code,
    status_rows,
    unknown_model,
)
from serving.servable import Servable
from serving.versions import Fingerprint, aspired_versions, fingerprint, scan_versions

__all__ = ["ManagerOptions", "ModelManager"]
log = logging.getLogger("serving.manager")


class ModelManager:
    """The models of the current config and the lifecycle of their versions.

    Args:
        options: load retries, warmup, label rules, loader threads, batching and the metric
            hooks (``--flags`` of TF Serving, see :class:`ManagerOptions`).

    Loads run on a small thread pool and unloads on one thread; every lookup takes one lock, so
    front ends call :meth:`resolve` and :meth:`status` from any thread.
    """

    def __init__(self, options: ManagerOptions) -> None:
        self.options = options
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, ModelEntry] = {}
        self._retired = RetiredVersions()  # versions GetModelStatus still reports
        self._stop = threading.Event()
        self._loader = ThreadPoolExecutor(max(1, options.num_load_threads), "load")
        self._unloader = ThreadPoolExecutor(1, "unload")

    # --- configuration --------------------------------------------------------------------
    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> list[str]:
        """Swap the set of models and labels, as TF Serving's ``ReloadConfig`` does.

        Labels are checked first: a label may only point at an AVAILABLE version (with
        ``allow_labels_for_unavailable``, a new label may point anywhere, but moving an existing
        label still needs an available version); on error nothing changes.

        Args:
            config: the whole ``ModelServerConfig`` (a ``model_config_list``).

        Returns:
            The names of the models that are new in this config.

        Raises:
            ServingError: FAILED_PRECONDITION for a label on a version that is not available.
        """
        wanted = {m.name: m for m in config.model_config_list.config}
        with self._lock:
            allow = self.options.allow_labels_for_unavailable
            labels = {
                name: checked_labels(self._models.get(name), name, model, allow)
                for name, model in wanted.items()
            }
            added = [name for name in wanted if name not in self._models]
            for name, entry in list(self._models.items()):
                if name not in wanted:
                    entry.removed = True
                    log.info("model %s removed from the config; unloading", name)
                    self._reconcile(name, set())
                    del self._models[name]
                    self._retired.add(name, entry.versions.values(), wanted)
            for name, model in wanted.items():
                entry = self._models.setdefault(name, ModelEntry(config=model))
                entry.config = model
                entry.labels = labels[name]
            for name in added:
                log.info("model %s added (base path %s)", name, wanted[name].base_path)
        self.poll()
        return added

    def wait_available(self, names: list[str], timeout: float | None = None) -> None:
        """Wait until each model has an AVAILABLE version; raise UNKNOWN for those that failed.

        A model with no version folder on disk is not waited for (TF Serving would wait forever).

        Args:
            names: the models to wait for.
            timeout: seconds; None waits until no load is in progress.

        Raises:
            ServingError: UNKNOWN naming each model whose every version failed to load.
        """

        def loading(name: str) -> bool:
            entry = self._models.get(name)
            return entry is not None and entry.loading()

        with self._lock:
            self._changed.wait_for(lambda: not any(map(loading, names)), timeout)
            entries = [(n, e) for n in names if (e := self._models.get(n)) is not None]
            failed = [errors for n, e in entries if (errors := e.load_errors(n))]
        if failed:
            raise ServingError(
                grpc.StatusCode.UNKNOWN,
                f"{len(failed)} model(s) did not become available: {{{', '.join(failed)}}}",
            )

    # --- polling ----------------------------------------------------------------------------
    def poll(self) -> None:
        """Scan each model's base path: load new aspired versions, unload the others."""
        with self._lock:
            names = list(self._models)
        for name in names:
            entry = self._models.get(name)
            if entry is None:
                continue
            base_path = entry.config.base_path
            try:
                on_disk = scan_versions(Path(base_path))
            except OSError as error:  # TF Serving aborts the poll and keeps every version
                log.warning(
                    "Could not find base path %s for servable %s with error %s; "
                    "keeping its versions", base_path, name, error,
                )  # fmt: skip
                continue
            with self._lock:
                if self._models.get(name) is not entry:
                    continue
                aspired = aspired_versions(entry.config.model_version_policy, on_disk)
                for version in sorted(aspired):
                    self._maybe_load(name, entry, version, on_disk[version])
                self._reconcile(name, aspired)

    def _maybe_load(self, name: str, entry: ModelEntry, version: int, path: Path) -> None:
        record = entry.versions.get(version)
        if record is not None and record.state in (State.START, State.LOADING, State.AVAILABLE):
            return
        if record is not None and record.failed_fingerprint is not None:
            if fingerprint(path) == record.failed_fingerprint:
                return
            log.info("%s version %d changed on disk since its failed load; retrying", name, version)
        record = VersionRecord(version=version, path=path, state=State.LOADING)
        entry.versions[version] = record
        self._loader.submit(self._load, name, entry, record)

    def _load(self, name: str, entry: ModelEntry, record: VersionRecord, attempt: int = 1) -> None:
        """One load attempt; a retry is scheduled on a timer, so no loader thread sleeps."""
        attempts = self.options.max_num_load_retries + 1
        if self._stop.is_set() or entry.removed:
            self._finish(name, entry, record, None, None)
            return
        seen = fingerprint(record.path)
        try:
            servable = load_version(name, record, self.options)
        except Exception as error:  # a model TF Serving would reject: log the reason
            log.error(
                "Loading servable %s version %d failed (attempt %d of %d): %s",
                name, record.version, attempt, attempts, error,
            )  # fmt: skip
            with self._lock:
                record.error_code, record.error_message = grpc_code(error), f"{error}"
            if attempt < attempts and not self._stop.is_set():
                timer = threading.Timer(
                    self.options.load_retry_interval_s,
                    self._submit,
                    args=(self._load, name, entry, record, attempt + 1),
                )
                timer.daemon = True
                timer.start()
                return
            self._finish(name, entry, record, None, seen)
            return
        self._finish(name, entry, record, servable, seen)

    def _submit(self, *args: Any) -> None:
        if not self._stop.is_set():
            self._loader.submit(*args)

    def _finish(
        self,
        name: str,
        entry: ModelEntry,
        record: VersionRecord,
        servable: Servable | None,
        seen: Fingerprint | None,
    ) -> None:
        with self._lock:
            if servable is None:
                record.state = State.END
                record.failed_fingerprint = seen if seen is not None else fingerprint(record.path)
                if not record.error_message:
                    record.error_code = grpc.StatusCode.CANCELLED
                    record.error_message = "load cancelled"
            elif entry.removed or self._stop.is_set():
                record.state = State.END
                servable.close()
            else:
                record.servable, record.state = servable, State.AVAILABLE
                record.error_code, record.error_message = grpc.StatusCode.OK, ""
                log.info("%s version %d is AVAILABLE", name, record.version)
                with contextlib.suppress(OSError):  # base path gone: the next poll logs it
                    on_disk = scan_versions(Path(entry.config.base_path))
                    policy = entry.config.model_version_policy
                    self._reconcile(name, aspired_versions(policy, on_disk))
            self._changed.notify_all()

    def _reconcile(self, name: str, aspired: set[int]) -> None:
        """Unload versions no longer aspired, once an aspired one is available (or none is)."""
        # Those that have ended go to the retired records, which GetModelStatus still reports.
        entry = self._models[name]
        self._retired.take_ended(name, entry.versions, aspired, self._models)
        available = {v for v, r in entry.versions.items() if r.state == State.AVAILABLE}
        keep_old = not entry.removed and aspired and not (aspired & available)
        for version, record in entry.versions.items():
            if version in aspired or record.state != State.AVAILABLE or keep_old:
                continue
            record.state = State.UNLOADING
            servable, record.servable = record.servable, None
            log.info("unloading %s version %d", name, version)
            self._unloader.submit(self._unload, record, servable)

    def _unload(self, record: VersionRecord, servable: Servable | None) -> None:
        if servable is not None:
            servable.close()
        with self._lock:
            record.state = State.END
            self._changed.notify_all()

    # --- lookups ----------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None, label: str | None) -> Servable:
        """The servable a request names, acquired: the caller must ``release()`` it.

        Args:
            name: the model.
            version: a version number; ``label`` instead, or neither for the newest available.
            label: a version label (``""`` is a label, which no model has).

        Returns:
            The servable, acquired (unloading waits until it is released).

        Raises:
            ServingError: NOT_FOUND (unknown model or version), INVALID_ARGUMENT (unknown label),
                UNAVAILABLE (the version is still loading).
        """
        with self._lock:
            entry = self._models.get(name)
            if entry is None:
                raise unknown_model(name, version, label)
            servable = entry.servable(name, version, label)
            servable.acquire()
            return servable

    def status(self, name: str, version: int | None) -> list[StatusRow]:
        """The state of a model's versions, live or retired, as GetModelStatus reports it:
        ``(version, state, error code, error message)`` of ``version``, or of all (None) newest
        first; NOT_FOUND (``ServingError``) for a model or version never seen."""
        with self._lock:
            entry = self._models.get(name)
            live = entry.versions if entry is not None else {}
            return status_rows(name, {**self._retired.records(name), **live}, version)

    def model_names(self) -> list[str]:
        """Returns the models of the current config, sorted."""
        with self._lock:
            return sorted(self._models)

    def stop(self) -> None:
        """Close every servable and stop loading; pending loads and unloads are dropped."""
        self._stop.set()
        with self._lock:
            for entry in self._models.values():
                entry.removed = True
                for record in entry.versions.values():
                    if record.servable is not None:
                        record.servable.close(timeout=5)
                        record.servable = None
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._unloader.shutdown(wait=False, cancel_futures=True)
