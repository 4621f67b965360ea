"""Version labels (stable, canary): promote and roll back through the model server.

Every change is a read-modify-write of the shared repository (``labels.json``, ``models.config``)
done under the repository's cross-process lock (:class:`fdl.repository.Repository`), so promotions
from several gateway replicas and the workers' publishes never overwrite each other. The lock is
waited for and taken in a worker thread, never on the event loop.

TF Serving only accepts a label that points at a loaded version, so a promotion of a version that
is not loaded has two steps, each written to the config file first (the file is what a restarted
or polling server reads) and then sent with ``HandleReloadConfigRequest`` to every replica of the
model server (:mod:`api.replicas`), step 2 only once each has finished step 1:
1. keep the version loaded (added to the model's ``specific`` version policy) and wait for it;
2. write ``labels.json``, render the final config, and reload with the label.

All or nothing: a change that fails at any point (a refused reload, a version that does not load,
a full disk or a permission error while writing) puts ``labels.json`` and ``models.config`` back as
they were (:meth:`fdl.repository.Repository.undo_point`) and the replicas that had taken a config
of the change get the old one again, so a label the client was told failed never takes effect
later (at the next render of the config, e.g. a worker's publish). A gateway that dies in the
middle of a change (SIGKILL, out of memory, a lost node) never answered it: the next process that
takes the lock rolls it back from the undo records it left (:func:`fdl.repository_files.roll_back`).
Only a gateway's change (:meth:`Promoter._turn`) then sends the restored config to the replicas;
a rollback at a gateway's start-up (:func:`api.repository_access.recover_at_start`), by a publish,
the job reaper or ``fdl up`` sends nothing, and the model servers take it at their next poll of the
config file (``--model_config_file_poll_wait_seconds``; docs/gateway.md, "Promotion").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import text_format

from api.errors import ApiError
from api.metadata_cache import MetadataCache
from api.metrics import PROMOTIONS, UPSTREAM_ERRORS
from api.replicas import reachable_replicas
from api.repository_access import io, repository_error, repository_locked
from api.serving_client import ServingClient
from api.serving_tls import TLS
from fdl.model_config import ConfigRenderError
from fdl.repository import Repository
from fdl.repository_files import Labels, LabelsFileError, UndoPoint
from fdl.wire.tfs_pb2 import ModelServerConfig, ReloadConfigRequest

POLL_S = 0.1
log = logging.getLogger(__name__)


def parse_config(text: str) -> ModelServerConfig:
    return text_format.Parse(text, ModelServerConfig())


@dataclass
class _Change:
    """One change of labels, under the lock: the replicas it goes to, how to undo its writes, and
    the replicas that have taken a config of it (they get the old one back if it fails)."""

    replicas: list[ServingClient]
    undo: UndoPoint
    written: bool = False
    reloaded: list[ServingClient] = field(default_factory=list)


class Promoter:
    def __init__(
        self,
        client: ServingClient,
        cache: MetadataCache,
        model_dir: Path,
        base_path_root: str | None,
        timeout_s: float,
        tls: TLS | None = None,
    ) -> None:
        self.client = client
        self.tls = tls
        self.cache = cache
        self.repository = Repository(model_dir, base_path_root, lock_timeout_s=timeout_s)
        self.timeout_s = timeout_s
        # Promotions of this process queue here rather than in threads blocked on the file lock.
        self._local = asyncio.Lock()

    async def _apply(self, change: _Change, replicas: list[ServingClient], text: str) -> None:
        """Write the config file, then tell each replica (each would also find it by polling)."""
        change.written = True
        await io(self.repository.write_config, text)
        request = ReloadConfigRequest(config=parse_config(text))
        for replica in replicas:
            await self._reload(replica, request)
            if replica not in change.reloaded:
                change.reloaded.append(replica)

    async def _reload(self, replica: ServingClient, request: ReloadConfigRequest) -> None:
        try:
            await replica.reload_config(request, timeout_s=self.timeout_s)
        except grpc.aio.AioRpcError as error:
            UPSTREAM_ERRORS.labels("HandleReloadConfigRequest", error.code().name).inc()
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ApiError(
                    503,
                    "model_server_unavailable",
                    f"the model server did not take the new config: {error.details()}",
                    headers={"Retry-After": "1"},
                ) from error
            raise ApiError(
                409, "reload_rejected", f"the model server refused the config: {error.details()}"
            ) from error

    async def _state(self, replica: ServingClient, model: str, version: int) -> tuple[str, str]:
        try:
            statuses = await replica.model_status(model)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise _server_error(error) from error
            return "NOT_LOADED", ""
        for status in statuses:
            if status.version == version:
                return status.state, status.error_message
        return "NOT_LOADED", ""

    async def _pending(
        self, replicas: list[ServingClient], model: str, version: int
    ) -> list[ServingClient]:
        """The replicas that have not loaded ``version`` yet."""
        pending = []
        for replica in replicas:
            state, message = await self._state(replica, model, version)
            if state == "AVAILABLE":
                continue
            if state == "END" and message:
                raise ApiError(
                    409, "version_failed", f"version {version} failed to load: {message}"
                )
            pending.append(replica)
        return pending

    async def _ensure_loaded(
        self, change: _Change, model: str, version: int, labels: Labels
    ) -> None:
        pending = await self._pending(change.replicas, model, version)
        if not pending:
            return
        await self._apply(change, pending, await self._render(labels, {model: {version}}))
        deadline = time.monotonic() + self.timeout_s
        while True:
            pending = await self._pending(pending, model, version)
            if not pending:
                return
            if time.monotonic() > deadline:
                state, _ = await self._state(pending[0], model, version)
                raise ApiError(
                    504,
                    "load_timeout",
                    f"version {version} was not loaded within {self.timeout_s:.0f}s "
                    f"(state {state})",
                )
            await asyncio.sleep(POLL_S)  # polling the server's status, with a deadline

    async def _render(self, labels: Labels, keep: dict[str, set[int]] | None = None) -> str:
        try:
            return await io(self.repository.render, labels, keep)
        except ConfigRenderError as error:
            raise ApiError(409, "invalid_config", f"config not written: {error}") from error

    @asynccontextmanager
    async def _turn(self, model: str) -> AsyncIterator[_Change]:
        """The repository's lock and the model server replicas that answer for ``model``, for one
        change that is undone if anything in it fails."""
        async with (
            repository_locked(self.repository, self._local, self.timeout_s),
            reachable_replicas(self.client, model, self.tls) as replicas,
        ):
            if await io(self.repository.recover):
                # A gateway died in the middle of a change, which may have reached the replicas.
                await self._reload_restored(replicas)
            change = _Change(replicas, await io(self.repository.undo_point))
            try:
                yield change
                # The change stands from here. On the loop, not in a thread: a cancellation there
                # (uvicorn's shutdown timeout) would run restore() beside the thread dropping the
                # records (new labels, old config). Two unlinks and an fsync, as restore() is.
                try:
                    change.undo.discard()
                except OSError as error:
                    raise repository_error(error) from error
            except BaseException:
                change.undo.restore()  # renames only: works on a full disk, never raises
                if change.written:
                    await self._reload_restored(change.reloaded)
                raise

    async def _reload_restored(self, replicas: list[ServingClient]) -> None:
        """Send the config file, as restored, to ``replicas`` (those that took a config of a
        change that failed, or of one that a dead gateway left half made)."""
        if not replicas:
            return
        try:
            text = await asyncio.to_thread(self.repository.config_path.read_text)
            request = ReloadConfigRequest(config=parse_config(text))
        except (OSError, text_format.ParseError):
            log.exception("the restored model config was not sent: the replicas will poll it")
            return
        for replica in replicas:
            with contextlib.suppress(ApiError):
                await self._reload(replica, request)

    async def _labels(self) -> Labels:
        try:
            return await io(self.repository.labels)
        except LabelsFileError as error:
            raise ApiError(
                409, "invalid_labels", f"{error}: fix or remove it; nothing was written"
            ) from error

    async def set_label(self, model: str, label: str, version: int) -> dict[str, Any]:
        async with self._turn(model) as change:
            labels = await self._labels()
            return await self._point(change, model, label, version, labels)

    async def roll_back(self, model: str, label: str) -> dict[str, Any]:
        """Point ``label`` at the newest version on disk older than the one it names now,
        whatever that version's load state (it is loaded first, as for a promotion)."""
        async with self._turn(model) as change:
            labels = await self._labels()
            current = labels.get(model, {}).get(label)
            if current is None:
                raise ApiError(404, "label_not_found", f"model {model} has no label {label!r}")
            older = [v for v in await io(self.repository.versions, model) if v < current]
            if not older:
                raise ApiError(
                    409,
                    "no_older_version",
                    f"No older version of {model} than {current} to roll {label!r} back to",
                )
            return await self._point(change, model, label, older[-1], labels)

    async def _point(
        self, change: _Change, model: str, label: str, version: int, labels: Labels
    ) -> dict[str, Any]:
        """Load ``version`` where needed, then point the label at it (the lock is held)."""
        if version not in await io(self.repository.versions, model):
            raise ApiError(
                404, "version_not_found", f"model {model} has no version {version} on disk"
            )
        previous = labels.get(model, {}).get(label)
        await self._ensure_loaded(change, model, version, labels)
        updated = {m: dict(v) for m, v in labels.items()}
        updated.setdefault(model, {})[label] = version
        await self._commit(change, updated)
        self.cache.invalidate(model)
        PROMOTIONS.labels(model, label).inc()
        return {
            "model": model,
            "label": label,
            "version": version,
            "previous": previous,
            "labels": updated[model],
        }

    async def remove_label(self, model: str, label: str) -> dict[str, Any]:
        async with self._turn(model) as change:
            labels = await self._labels()
            if label not in labels.get(model, {}):
                raise ApiError(404, "label_not_found", f"model {model} has no label {label!r}")
            updated = {m: dict(v) for m, v in labels.items()}
            previous = updated[model].pop(label)
            if not updated[model]:
                del updated[model]
            await self._commit(change, updated)
        self.cache.invalidate(model)
        return {
            "model": model,
            "label": label,
            "version": previous,
            "previous": previous,
            "labels": updated.get(model, {}),
        }

    async def _commit(self, change: _Change, after: Labels) -> None:
        """Persist the labels and reload (a failure is undone by :meth:`_turn`)."""
        text = await self._render(after)  # a config that would not parse: nothing written
        change.written = True
        await io(self.repository.write_labels, after)
        await self._apply(change, change.replicas, text)


def _server_error(error: grpc.aio.AioRpcError) -> ApiError:
    UPSTREAM_ERRORS.labels("GetModelStatus", error.code().name).inc()
    return ApiError(
        503,
        "model_server_unavailable",
        f"the model server is unavailable: {error.details()}",
        headers={"Retry-After": "1"},
    )
