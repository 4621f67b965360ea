"""The lifecycle of one version: load (retries, warmup), AVAILABLE, the swap, unload.

Availability is preserved as in TF Serving: a new version serves only once it has loaded and
warmed up, and the versions it replaces are unloaded only then. A failed load keeps the old
version serving; it is retried ``max_num_load_retries`` times, and again whenever the files of
that version folder change (so an export still being written never wedges the server).

Every change to a record happens under the manager's lock, which :class:`VersionLifecycle`
shares; no file is read while it is held.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from serving.loading import load_version
from serving.records import (
    ManagerOptions,
    ModelEntry,
    RetiredVersions,
    State,
    VersionRecord,
    grpc_code,
)
from serving.servable import Servable
from serving.versions import Fingerprint, fingerprint

log = logging.getLogger("serving.manager")


class VersionLifecycle:
    """Loads versions on ``num_load_threads`` threads and unloads them on one.

    Args:
        options: load retries, warmup and the load hooks (see :class:`ManagerOptions`).
        changed: the manager's condition; its lock guards ``models`` and every record.
        models: the manager's models of the current config, by name.
        retired: the records of ended versions that ``GetModelStatus`` still reports.
    """

    def __init__(
        self,
        options: ManagerOptions,
        changed: threading.Condition,
        models: Mapping[str, ModelEntry],
        retired: RetiredVersions,
    ) -> None:
        self.options = options
        self._changed = changed
        self._models = models
        self._retired = retired
        self.stopped = threading.Event()
        self._loader = ThreadPoolExecutor(max(1, options.num_load_threads), "load")
        self._unloader = ThreadPoolExecutor(1, "unload")

    def maybe_load(
        self, name: str, entry: ModelEntry, version: int, path: Path, seen: Fingerprint | None
    ) -> None:
        """Start loading an aspired version unless it is loaded, loading, or failed with the
        files it has now (``seen``: their fingerprint, taken outside the lock; None when it was
        not taken, and the next poll compares). Called under the lock."""
        record = entry.versions.get(version)
        if record is not None and record.state in (State.START, State.LOADING, State.AVAILABLE):
            return
        if record is not None and record.failed_fingerprint is not None:
            if seen is None or seen == record.failed_fingerprint:
                return
            log.info("%s version %d changed on disk since its failed load; retrying", name, version)
        record = VersionRecord(version=version, path=path, state=State.LOADING)
        entry.versions[version] = record
        self._loader.submit(self._load, name, entry, record)

    def _load(self, name: str, entry: ModelEntry, record: VersionRecord, attempt: int = 1) -> None:
        """One load attempt; a retry is scheduled on a timer, so no loader thread sleeps."""
        attempts = self.options.max_num_load_retries + 1
        if self.stopped.is_set() or entry.removed:
            self._finish(name, entry, record, None, fingerprint(record.path))
            return
        seen = fingerprint(record.path)
        try:
            servable = load_version(name, record, self.options)
        except Exception as error:  # a model TF Serving would reject: log the reason
            log.error(
                "Loading servable %s version %d failed (attempt %d of %d): %s",
                name, record.version, attempt, attempts, error,
            )  # fmt: skip
            with self._changed:
                record.error_code, record.error_message = grpc_code(error), f"{error}"
            if attempt < attempts and not self.stopped.is_set():
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
        if not self.stopped.is_set():
            self._loader.submit(*args)

    def _finish(
        self,
        name: str,
        entry: ModelEntry,
        record: VersionRecord,
        servable: Servable | None,
        seen: Fingerprint,
    ) -> None:
        with self._changed:
            if servable is None:
                record.state = State.END
                record.failed_fingerprint = seen
                if not record.error_message:
                    record.error_code = grpc.StatusCode.CANCELLED
                    record.error_message = "load cancelled"
            elif entry.removed or self.stopped.is_set():
                record.state = State.END
                servable.close()
            else:
                record.servable, record.state = servable, State.AVAILABLE
                record.error_code, record.error_message = grpc.StatusCode.OK, ""
                log.info("%s version %d is AVAILABLE", name, record.version)
                # The versions it replaces go now, by the newest scan's aspired versions (as TF
                # Serving's manager acts on the last aspired list its source sent).
                self.reconcile(name, entry, entry.aspired)
            self._changed.notify_all()

    def reconcile(self, name: str, entry: ModelEntry, aspired: set[int]) -> None:
        """Unload versions no longer aspired, once an aspired one is available (or none is);
        meanwhile only the newest of them stays. Called under the lock."""
        # Those that have ended go to the retired records, which GetModelStatus still reports.
        self._retired.take_ended(name, entry.versions, aspired, self._models)
        available = {v for v, r in entry.versions.items() if r.state == State.AVAILABLE}
        # Until an aspired version is available, the newest version it replaces keeps serving;
        # the older ones go at once, as TF Serving's AvailabilityPreservingPolicy unloads the
        # lowest of two or more unaspired versions that serve.
        replaced = available - aspired
        keep_old = not entry.removed and aspired and not (aspired & available)
        keep = {max(replaced)} if keep_old and replaced else set()
        for version, record in entry.versions.items():
            if version in aspired or record.state != State.AVAILABLE or version in keep:
                continue
            record.state = State.UNLOADING
            servable, record.servable = record.servable, None
            log.info("unloading %s version %d", name, version)
            self._unloader.submit(self._unload, record, servable)

    def _unload(self, record: VersionRecord, servable: Servable | None) -> None:
        if servable is not None:
            servable.close()
        with self._changed:
            record.state = State.END
            self._changed.notify_all()

    def shutdown(self) -> None:
        """Stop loading; pending loads and unloads are dropped."""
        self.stopped.set()
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._unloader.shutdown(wait=False, cancel_futures=True)
