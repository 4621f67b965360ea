"""Version labels (stable, canary): promote and roll back through the model server.

TF Serving only accepts a label that points at a loaded version, so a promotion of a version that
is not loaded has two steps, each written to the config file first (the file is what a restarted
or polling server reads) and then sent with ``HandleReloadConfigRequest``:
1. keep the version loaded (added to the model's ``specific`` version policy) and wait for it;
2. write ``labels.json``, render the final config, and reload with the label.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import text_format

from api.errors import ApiError
from api.metadata_cache import MetadataCache
from api.metrics import PROMOTIONS, UPSTREAM_ERRORS
from api.serving_client import ServingClient
from api.wire.tfs_pb2 import ModelServerConfig, ReloadConfigRequest
from fdl.model_config import CONFIG_FILE, atomic_write, list_versions, render_config, write_labels
from fdl.model_config import read_labels as _read_labels

_LOCK = asyncio.Lock()
POLL_S = 0.1


def parse_config(text: str) -> ModelServerConfig:
    return text_format.Parse(text, ModelServerConfig())


class Promoter:
    def __init__(
        self,
        client: ServingClient,
        cache: MetadataCache,
        model_dir: Path,
        base_path_root: str | None,
        timeout_s: float,
    ) -> None:
        self.client = client
        self.cache = cache
        self.model_dir = model_dir
        self.base_path_root = base_path_root
        self.timeout_s = timeout_s

    def _render_text(self, labels: dict[str, dict[str, int]]) -> str:
        return render_config(self.model_dir, labels, self.base_path_root)

    async def _apply(self, config: ModelServerConfig, text: str | None = None) -> None:
        """Write the config file, then tell the server (it would also find the file by polling)."""
        atomic_write(self.model_dir / CONFIG_FILE, text or text_format.MessageToString(config))
        try:
            await self.client.reload_config(
                ReloadConfigRequest(config=config), timeout_s=self.timeout_s
            )
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

    async def _state(self, model: str, version: int) -> tuple[str, str]:
        statuses = await self.client.model_status(model)
        for status in statuses:
            if status.version == version:
                return status.state, status.error_message
        return "NOT_LOADED", ""

    async def _ensure_loaded(
        self, model: str, version: int, labels: dict[str, dict[str, int]]
    ) -> None:
        try:
            state, _ = await self._state(model, version)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise _server_error(error) from error
            state = "NOT_LOADED"
        if state == "AVAILABLE":
            return
        config = parse_config(self._render_text(labels))
        for entry in config.model_config_list.config:
            if entry.name == model:
                specific = entry.model_version_policy.specific
                wanted = set(specific.versions) | set(list_versions(self.model_dir / model)[-1:])
                wanted.add(version)
                specific.ClearField("versions")
                specific.versions.extend(sorted(wanted))
        await self._apply(config)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                state, message = await self._state(model, version)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise _server_error(error) from error
                state, message = "NOT_LOADED", ""
            if state == "AVAILABLE":
                return
            if state == "END" and message:
                raise ApiError(
                    409, "version_failed", f"version {version} failed to load: {message}"
                )
            if time.monotonic() > deadline:
                raise ApiError(
                    504,
                    "load_timeout",
                    f"version {version} was not loaded within {self.timeout_s:.0f}s "
                    f"(state {state})",
                )
            await asyncio.sleep(POLL_S)  # polling the server's status, with a deadline

    async def set_label(self, model: str, label: str, version: int) -> dict[str, Any]:
        if version not in list_versions(self.model_dir / model):
            raise ApiError(
                404, "version_not_found", f"model {model} has no version {version} on disk"
            )
        async with _LOCK:
            labels = _read_labels(self.model_dir)
            previous = labels.get(model, {}).get(label)
            await self._ensure_loaded(model, version, labels)
            updated = {m: dict(v) for m, v in labels.items()}
            updated.setdefault(model, {})[label] = version
            await self._commit(labels, updated)
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
        async with _LOCK:
            labels = _read_labels(self.model_dir)
            if label not in labels.get(model, {}):
                raise ApiError(404, "label_not_found", f"model {model} has no label {label!r}")
            updated = {m: dict(v) for m, v in labels.items()}
            previous = updated[model].pop(label)
            if not updated[model]:
                del updated[model]
            await self._commit(labels, updated)
        self.cache.invalidate(model)
        return {
            "model": model,
            "label": label,
            "version": previous,
            "previous": previous,
            "labels": updated.get(model, {}),
        }

    async def _commit(
        self, before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
    ) -> None:
        """Persist the labels and reload; on failure put the old labels and config back."""
        write_labels(self.model_dir, after)
        text = self._render_text(after)
        try:
            await self._apply(parse_config(text), text)
        except ApiError:
            write_labels(self.model_dir, before)
            atomic_write(self.model_dir / CONFIG_FILE, self._render_text(before))
            raise


def _server_error(error: grpc.aio.AioRpcError) -> ApiError:
    UPSTREAM_ERRORS.labels("GetModelStatus", error.code().name).inc()
    return ApiError(
        503,
        "model_server_unavailable",
        f"the model server is unavailable: {error.details()}",
        headers={"Retry-After": "1"},
    )
