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
later (at the next render of the config, e.g. a worker's publish); a change the gateway's shutdown
cut short gets the old config to its replicas in time or leaves it to the next taker of the lock
(:mod:`api.promotion_undo`). A gateway that dies in the
middle of a change (SIGKILL, out of memory, a lost node) never answered it: the next process that
takes the lock rolls it back from the undo records it left (:func:`fdl.repository_files.roll_back`)
and a gateway's change or start-up then sends the restored config to the replicas, in two steps
where one had taken the dead change in full (:mod:`api.replica_configs`). Other rollbacks (a
publish, the job reaper, ``fdl up``, a reader) send nothing, and a replica that did not answer
when a change was made is left out of it: the replica sync (:mod:`api.replica_sync`) sends the
config to each replica whose labels differ from it (docs/gateway.md, "Promotion").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from api.errors import ApiError
from api.label_precondition import Expected, check
from api.metadata_cache import MetadataCache
from api.metrics import PROMOTIONS
from api.promotion_undo import Change, undo
from api.replica_configs import ReplicaConfigs, parse_config
from api.replicas import reachable_replicas
from api.repository_access import io, repository_error, repository_locked
from api.serving_client import PROBE_MODEL, ServingClient
from api.serving_tls import TLS
from fdl.model_config import ConfigRenderError
from fdl.repository import Repository
from fdl.repository_files import Labels, LabelsFileError

log = logging.getLogger(__name__)
# The replica sync's work under the lock, given the replicas that answer (api/replica_sync.py).
SyncSend = Callable[[list[ServingClient]], Awaitable[None]]


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
        self._at_once = Repository(model_dir, base_path_root, lock_timeout_s=0)  # never waits
        self.timeout_s = timeout_s
        self.replicas = ReplicaConfigs(timeout_s)
        # Promotions of this process queue here rather than in threads blocked on the file lock.
        self._local = asyncio.Lock()
        # The replica sync's work under the lock, which a change of this process stops (it goes
        # first), and the changes of this process waiting for the lock or holding it.
        self._syncing: asyncio.Future[None] | None = None
        self._changes = 0

    async def _apply(self, change: Change, replicas: list[ServingClient], text: str) -> None:
        """Write the config file, then tell each replica (each would also find it by polling)."""
        change.written = True
        await io(self.repository.write_config, text)
        config = parse_config(text)
        for replica in replicas:
            # Before the call: a replica may take a config of the change (a bridge's first
            # step, a reload whose answer was lost) and the call still fail.
            if replica not in change.reloaded:
                change.reloaded.append(replica)
            await self.replicas.reload(replica, config, change.deadline)

    async def _ensure_loaded(
        self, change: Change, model: str, version: int, labels: Labels
    ) -> None:
        pending = await self.replicas.pending(change.replicas, model, version, change.deadline)
        if not pending:
            return
        await self._apply(change, pending, await self._render(labels, {model: {version}}))
        await self.replicas.wait_loaded(pending, model, version, change.deadline)

    async def _render(self, labels: Labels, keep: dict[str, set[int]] | None = None) -> str:
        try:
            return await io(self.repository.render, labels, keep)
        except ConfigRenderError as error:
            raise ApiError(409, "invalid_config", f"config not written: {error}") from error

    @asynccontextmanager
    async def _turn(self, model: str) -> AsyncIterator[Change]:
        """The repository's lock and the model server replicas that answer for ``model``, for one
        change that is undone if anything in it fails."""
        async with self._locked(), reachable_replicas(self.client, model, self.tls) as replicas:
            deadline = self.replicas.deadline()
            if await self._recover():
                # A gateway died in the middle of a change, which may have reached the replicas.
                await self._reload_restored(replicas, deadline)
            change = Change(replicas, await io(self.repository.undo_point), deadline)
            try:
                yield change
                # The change stands from here. On the loop, not in a thread: a cancellation there
                # (uvicorn's shutdown timeout) would run restore() beside the thread dropping the
                # records (new labels, old config). Two unlinks and an fsync, as restore() is.
                try:
                    change.undo.discard()
                except OSError as error:
                    raise repository_error(error) from error
            except BaseException as error:
                await undo(change, self.repository, self.replicas, error)  # never in its place
                raise

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """The lock, for a change or a restore: a replica sync that holds it gives it up."""
        self._changes += 1
        try:
            if self._syncing is not None:
                self._syncing.cancel()
            async with repository_locked(self.repository, self._local, self.timeout_s):
                yield
        finally:
            self._changes -= 1

    async def _recover(self) -> bool:
        """Roll back a change a dead process left half made. Cancelled (a deadline, the
        shutdown), it waits for the rollback's thread: the lock is never given back while it
        renames the files (as :meth:`_turn` keeps ``restore()`` whole)."""
        rolling = asyncio.ensure_future(io(self.repository.recover))
        try:
            return await asyncio.shield(rolling)
        except asyncio.CancelledError:
            while not rolling.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([rolling])
            if not rolling.cancelled():
                rolling.exception()  # retrieved: the cancellation goes on
            raise

    async def _reload_restored(
        self, replicas: list[ServingClient], deadline: float | None = None
    ) -> None:
        """Send the config file, as restored, to ``replicas`` (those that took a config of a
        change that failed, or of one that a dead gateway left half made)."""
        await self.replicas.send_file(replicas, self.repository.config_path, deadline)

    async def send_restored(self) -> None:
        """The config file to every replica, under the lock: after a rollback at the gateway's
        start, whose dead change may have reached them (a replica that took it in full refuses
        the restored file at each poll; see :mod:`api.replica_configs`). Failures are logged."""
        try:
            async with self._locked():
                await self._settled(self._reload_restored)
        except ApiError as error:
            log.error("the restored model config was not sent: %s", error.message)
        except Exception:  # a labels.json that cannot be read: the next change says so
            log.exception("the restored model config was not sent")

    async def sync_replicas(self, send: SyncSend) -> bool:
        """Under the lock if it is free at once (never beside a change in progress): roll back
        a change left half made, then ``send`` to the replicas that answer. Whether it ran: a
        change of this process that comes for the lock stops ``send`` and goes first (it reaches
        the replicas itself). Raises as a change does."""
        if self._local.locked() or self._changes:
            return False
        try:
            async with repository_locked(self._at_once, self._local, 0):
                if self._changes:  # one came while the lock was taken
                    return False
                self._syncing = asyncio.ensure_future(self._settled(send))
                try:
                    await self._syncing
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # the sync's own (its round's deadline, the shutdown)
                    return False
                finally:
                    self._syncing = None
        except ApiError as error:
            if error.code == "repository_busy":
                return False
            raise
        return True

    async def _settled(self, send: SyncSend) -> None:
        """Under the lock: roll back a dead change, then ``send`` to the replicas that answer."""
        async with reachable_replicas(self.client, PROBE_MODEL, self.tls) as replicas:
            await self._recover()
            await send(replicas)

    async def _labels(self) -> Labels:
        try:
            return await io(self.repository.labels)
        except LabelsFileError as error:
            raise ApiError(
                409, "invalid_labels", f"{error}: fix or remove it; nothing was written"
            ) from error

    async def set_label(
        self, model: str, label: str, version: int, expect: Expected = None
    ) -> dict[str, Any]:
        async with self._turn(model) as change:
            labels = await self._labels()
            check(expect, model, label, labels)
            return await self._point(change, model, label, version, labels)

    async def roll_back(self, model: str, label: str, expect: Expected = None) -> dict[str, Any]:
        """Point ``label`` at the newest version on disk older than the one it names now,
        whatever that version's load state (it is loaded first, as for a promotion)."""
        async with self._turn(model) as change:
            labels = await self._labels()
            check(expect, model, label, labels)
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
        self, change: Change, model: str, label: str, version: int, labels: Labels
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

    async def remove_label(self, model: str, label: str, expect: Expected = None) -> dict[str, Any]:
        async with self._turn(model) as change:
            labels = await self._labels()
            check(expect, model, label, labels)
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

    async def _commit(self, change: Change, after: Labels) -> None:
        """Persist the labels and reload (a failure is undone by :meth:`_turn`)."""
        text = await self._render(after)  # a config that would not parse: nothing written
        change.written = True
        await io(self.repository.write_labels, after)
        await self._apply(change, change.replicas, text)
