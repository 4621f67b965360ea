"""The promoter's calls to each model-server replica: reloading a config, and waiting for a
version to load.

A config that moves an existing label is refused unless the version it names is loaded
(``FAILED_PRECONDITION``: "Request to assign label to version N … not currently available").
A promotion loads the version first, but a config that puts labels *back* can meet a replica
that no longer has the old version: a change that reached the replica in full (the old version
unloaded, the label moved) and was then undone, because the gateway making it failed or died
before acknowledging it. Sent as is, such a config is refused by that replica, and polled from
the file it is refused at every poll: the replica would go on serving the undone label, and every
later config of the model would be refused too. So a refused config goes in two steps, as a
promotion does (:func:`bridge_config`): first the replica's labels as they are now, with the
config's versions added to what it loads; once those have loaded, the config itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import grpc
from google.protobuf import text_format

from api.errors import ApiError
from api.metrics import UPSTREAM_ERRORS
from api.serving_client import ServingClient, VersionStatus
from fdl.wire.tfs_pb2 import ModelServerConfig, ReloadConfigRequest

log = logging.getLogger(__name__)
POLL_S = 0.1
# What a replica answers a label that it does not have (TF Serving: INVALID_ARGUMENT
# "Unrecognized servable version label"), or one whose version it does not serve (NOT_FOUND).
_NO_LABEL = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


def still_loading(error: grpc.aio.AioRpcError) -> bool:
    """Our model server's answer for a version it is still loading, asked by number or label
    (TF Serving answers NOT_FOUND, as for any version it does not serve: docs/serving.md)."""
    code, details = error.code(), error.details() or ""
    return code == grpc.StatusCode.UNAVAILABLE and "still loading" in details


def parse_config(text: str) -> ModelServerConfig:
    return text_format.Parse(text, ModelServerConfig())


def bridge_config(
    config: ModelServerConfig,
    available: dict[str, set[int]],
    served: dict[str, dict[str, int]],
) -> ModelServerConfig | None:
    """The step before ``config`` for a replica that refused it, or None when there is none.

    ``available``: each model's loaded versions there; ``served``: the versions its labels name
    there now. Each label of ``config`` keeps its version where that is loaded; otherwise it
    stays where the replica has it (left out when the replica does not have it). Each
    ``specific`` version policy also loads the config's versions and the labels' versions.
    """
    bridge = ModelServerConfig()
    bridge.CopyFrom(config)
    changed = False
    for model in bridge.model_config_list.config:
        loaded = available.get(model.name, set())
        now = served.get(model.name, {})
        wanted = dict(model.version_labels)
        labels = {}
        for label, version in wanted.items():
            if version in loaded:
                labels[label] = version
            elif label in now:
                labels[label] = now[label]
        if labels == wanted:
            continue
        changed = True
        model.ClearField("version_labels")
        model.version_labels.update(labels)
        if model.model_version_policy.HasField("specific"):
            versions = model.model_version_policy.specific.versions
            keep = set(versions) | set(labels.values())
            del versions[:]
            versions.extend(sorted(keep))
    return bridge if changed else None


class ReplicaConfigs:
    """Reload calls and load waits against replicas, each bounded by ``timeout_s``; a failure
    is an :class:`ApiError` a client can act on (409 refused, 503 unavailable, 504 timeout)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    async def reload(
        self, replica: ServingClient, config: ModelServerConfig, deadline: float
    ) -> None:
        """Hand ``config`` to ``replica``; one refused for a label's unloaded version is bridged
        (see the module) and sent again. Every call and wait ends by ``deadline`` (monotonic)."""
        try:
            await self._send(replica, config, deadline)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise _refused(error) from error
            try:
                bridge = bridge_config(config, *await self._labels_now(replica, config, deadline))
                if bridge is not None:
                    await self._send(replica, bridge, deadline)
                    for model in config.model_config_list.config:
                        for version in sorted(set(model.version_labels.values())):
                            await self.wait_loaded([replica], model.name, version, deadline)
                # Bridged, or its versions loaded since the refusal (TF Serving starts loading
                # a refused config's versions): the config itself, once more.
                await self._send(replica, config, deadline)
            except grpc.aio.AioRpcError as again:
                raise _refused(again) from again

    async def send_file(
        self, replicas: list[ServingClient], path: Path, deadline: float | None = None
    ) -> None:
        """The config file ``path`` as it is now to each of ``replicas``, reloaded as above (all
        by ``deadline``, or one :meth:`deadline` from now); a failure is logged."""
        if not replicas:
            return
        deadline = deadline or self.deadline()
        try:
            config = parse_config(await asyncio.to_thread(path.read_text))
        except (OSError, ValueError):  # text_format.ParseError, UnicodeDecodeError
            log.exception("the restored model config was not sent: the replicas will poll it")
            return
        for replica in replicas:
            try:
                await self.reload(replica, config, deadline)
            except ApiError as error:
                log.error(
                    "replica %s did not take the model config: %s", replica.target, error.message
                )

    async def _send(
        self, replica: ServingClient, config: ModelServerConfig, deadline: float
    ) -> None:
        request = ReloadConfigRequest(config=config)
        await replica.reload_config(request, timeout_s=_left(deadline))

    async def _labels_now(
        self, replica: ServingClient, config: ModelServerConfig, deadline: float
    ) -> tuple[dict[str, set[int]], dict[str, dict[str, int]]]:
        """The loaded versions and the labels' versions on ``replica`` of the labelled models."""
        available: dict[str, set[int]] = {}
        served: dict[str, dict[str, int]] = {}
        for model in config.model_config_list.config:
            if not model.version_labels:
                continue
            available[model.name] = {
                status.version
                for status in await self._statuses(replica, model.name, deadline)
                if status.state == "AVAILABLE"
            }
            served[model.name] = await self.served_labels(
                replica, model.name, model.version_labels, deadline
            )
        return available, served

    async def served_labels(
        self, replica: ServingClient, model: str, labels: Iterable[str], deadline: float
    ) -> dict[str, int]:
        """The version each of ``labels`` names on ``replica`` now; a label it does not have, or
        whose version it does not serve (yet), is left out. Each call ends by ``deadline``; a
        failed one is a counted 503 ApiError."""
        served = {}
        for label in labels:
            try:
                served[label] = await replica.label_version(model, label, _left(deadline))
            except grpc.aio.AioRpcError as error:
                if error.code() not in _NO_LABEL and not still_loading(error):
                    raise server_error(error, "GetModelMetadata") from error
        return served

    async def _statuses(
        self, replica: ServingClient, model: str, deadline: float | None
    ) -> list[VersionStatus]:
        timeout_s = None if deadline is None else _left(deadline)
        try:
            return await replica.model_status(model, timeout_s=timeout_s)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise server_error(error, "GetModelStatus") from error
            return []

    async def state(
        self, replica: ServingClient, model: str, version: int, deadline: float | None = None
    ) -> tuple[str, str]:
        for status in await self._statuses(replica, model, deadline):
            if status.version == version:
                return status.state, status.error_message
        return "NOT_LOADED", ""

    async def pending(
        self,
        replicas: list[ServingClient],
        model: str,
        version: int,
        deadline: float | None = None,
    ) -> list[ServingClient]:
        """The replicas that have not loaded ``version`` yet (each asked by ``deadline``)."""
        pending = []
        for replica in replicas:
            state, message = await self.state(replica, model, version, deadline)
            if state == "AVAILABLE":
                continue
            if state == "END" and message:
                raise ApiError(
                    409, "version_failed", f"version {version} failed to load: {message}"
                )
            pending.append(replica)
        return pending

    async def wait_loaded(
        self, replicas: list[ServingClient], model: str, version: int, deadline: float
    ) -> None:
        """Until each of ``replicas`` has loaded ``version`` (504 at ``deadline``, monotonic)."""
        while True:
            replicas = await self.pending(replicas, model, version, deadline)
            if not replicas:
                return
            if time.monotonic() > deadline:
                try:  # what it was doing, if it still says in the moment left
                    state, _ = await self.state(replicas[0], model, version, deadline)
                except ApiError:
                    state = "unknown"
                raise ApiError(
                    504,
                    "load_timeout",
                    f"version {version} was not loaded within {self.timeout_s:.0f}s "
                    f"(state {state})",
                )
            await asyncio.sleep(POLL_S)  # polling the server's status, with a deadline

    def deadline(self) -> float:
        """The deadline of one change's calls and waits, all together."""
        return time.monotonic() + self.timeout_s


def _left(deadline: float) -> float:
    """The time left to ``deadline``: at least a moment, so that a late call fails as a
    deadline rather than not being made."""
    return max(0.05, deadline - time.monotonic())


def _refused(error: grpc.aio.AioRpcError) -> ApiError:
    UPSTREAM_ERRORS.labels("HandleReloadConfigRequest", error.code().name).inc()
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ApiError(
            503,
            "model_server_unavailable",
            f"the model server did not take the new config: {error.details()}",
            headers={"Retry-After": "1"},
        )
    return ApiError(
        409, "reload_rejected", f"the model server refused the config: {error.details()}"
    )


def server_error(error: grpc.aio.AioRpcError, method: str) -> ApiError:
    UPSTREAM_ERRORS.labels(method, error.code().name).inc()
    return ApiError(
        503,
        "model_server_unavailable",
        f"the model server is unavailable: {error.details()}",
        headers={"Retry-After": "1"},
    )
