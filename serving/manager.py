"""The models of the current config: the config swap, the polls of their base paths, lookups.

Each poll lists a model's base path and fingerprints its failed versions outside the lock, then
starts the loads and unloads under it (:mod:`serving.lifecycle`), so a slow file system never
holds the lookups every request makes.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.config_rules import check_platforms
from serving.errors import ServingError
from serving.lifecycle import VersionLifecycle
from serving.records import (
    ManagerOptions,
    ModelConfig,
    ModelEntry,
    RetiredVersions,
    StatusRow,
    checked_labels,
    status_rows,
    unknown_model,
)
from serving.servable import Servable
from serving.versions import Fingerprint, aspired_versions, fingerprint, scan_versions

__all__ = ["ManagerOptions", "ModelManager"]
log = logging.getLogger("serving.manager")


def pending_aspired(entry: ModelEntry, model: ModelConfig) -> set[int]:
    """The versions a new config aspires until its own poll lists the base path: its policy over
    the last listing, so a load that finishes meanwhile unloads by the new policy, not the old
    one (a rollback to ``specific { 1 }`` while version 2 loads keeps 1). No file is read: this
    runs under the lock. When the policy aspires none of the listed versions (it may name a
    folder that the last listing predates), none is unloaded until the poll tells."""
    aspired = aspired_versions(model.model_version_policy, entry.on_disk)
    return aspired or set(entry.versions)


class ModelManager:
    """The models of the current config and the lifecycle of their versions.

    Args:
        options: load retries, warmup, label rules, loader threads, batching and the metric
            hooks (``--flags`` of TF Serving, see :class:`ManagerOptions`).

    Loads run on a small thread pool and unloads on one thread; every lookup takes one lock, so
    front ends call :meth:`resolve` and :meth:`status` from any thread. The lock guards the
    models, their records and labels; it is never held while files are read.
    """

    def __init__(self, options: ManagerOptions) -> None:
        self.options = options
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._models: dict[str, ModelEntry] = {}
        self._retired = RetiredVersions()  # versions GetModelStatus still reports
        self._versions = VersionLifecycle(options, self._changed, self._models, self._retired)

    # --- configuration --------------------------------------------------------------------
    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> list[str]:
        """Swap the set of models and labels, as TF Serving's ``ReloadConfig`` does.

        Labels are checked first: a label may only point at an AVAILABLE version (with
        ``allow_labels_for_unavailable``, a new label may point anywhere, but moving an existing
        label still needs an available version); then each model's platform. On error nothing
        changes.

        Args:
            config: the whole ``ModelServerConfig`` (a ``model_config_list``).

        Returns:
            The names of the models that are new in this config.

        Raises:
            ServingError: FAILED_PRECONDITION for a label on a version that is not available,
                INVALID_ARGUMENT for a platform this server does not serve.
        """
        wanted = {m.name: m for m in config.model_config_list.config}
        with self._lock:
            allow = self.options.allow_labels_for_unavailable
            labels = {
                name: checked_labels(self._models.get(name), name, model, allow)
                for name, model in wanted.items()
            }
            check_platforms(config.model_config_list)
            added = [name for name in wanted if name not in self._models]
            for name, entry in list(self._models.items()):
                if name not in wanted:
                    entry.removed = True
                    log.info("model %s removed from the config; unloading", name)
                    self._versions.reconcile(name, entry, set())
                    del self._models[name]
                    self._retired.add(name, entry.versions.values(), wanted)
            for name, model in wanted.items():
                entry = self._models.setdefault(name, ModelEntry(config=model))
                entry.config = model
                entry.labels = labels[name]
                entry.aspired = pending_aspired(entry, model)
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
            self._poll_model(name)

    def _poll_model(self, name: str) -> None:
        with self._lock:
            entry = self._models.get(name)
            if entry is None:
                return
            config = entry.config
            entry.scans_started += 1
            ticket = entry.scans_started
            failed = {v for v, r in entry.versions.items() if r.failed_fingerprint is not None}
        try:
            on_disk = scan_versions(Path(config.base_path))
        except OSError as error:  # TF Serving aborts the poll and keeps every version
            log.warning(
                "Could not find base path %s for servable %s with error %s; "
                "keeping its versions", config.base_path, name, error,
            )  # fmt: skip
            return
        aspired = aspired_versions(config.model_version_policy, on_disk)
        # A failed version is tried again only once its files change.
        seen: dict[int, Fingerprint] = {v: fingerprint(on_disk[v]) for v in failed & aspired}
        with self._lock:
            # A reload may have changed the model, or a newer scan been applied, meanwhile.
            stale = entry.config is not config or entry.scan_applied > ticket
            if self._models.get(name) is not entry or stale:
                return
            entry.scan_applied, entry.on_disk, entry.aspired = ticket, on_disk, aspired
            for version in sorted(aspired):
                path = on_disk[version]
                self._versions.maybe_load(name, entry, version, path, seen.get(version))
            self._versions.reconcile(name, entry, aspired)

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
        self._versions.stopped.set()
        with self._lock:
            for entry in self._models.values():
                entry.removed = True
                for record in entry.versions.values():
                    if record.servable is not None:
                        record.servable.close(timeout=5)
                        record.servable = None
        self._versions.shutdown()
