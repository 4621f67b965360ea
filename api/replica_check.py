"""Whether one model-server replica's version labels are the config's, for the replica sync
(:mod:`api.replica_sync`), with cheap calls: TF Serving has no call that lists a model's labels,
so each label is asked for with ``GetModelMetadata`` (a few at once, each call with a deadline of
its own), and a label the config had earlier in the process's life must be gone there too.

A label whose version the replica is still loading is in transition, not a difference: our model
server answers such a label UNAVAILABLE "still loading", TF Serving NOT_FOUND (it serves no such
version), and a replica starting up has no label until its version loads; the version's state
(``GetModelStatus``) tells which. A check that could not ask every label it needed (a call failed
or timed out) is incomplete: no answer, never read as agreement.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from api.errors import ApiError
from api.replica_configs import server_error, still_loading
from api.serving_client import ServingClient, VersionStatus
from fdl.wire.tfs_pb2 import ModelServerConfig

CALLS_AT_ONCE = 8  # per replica
CALLS_PER_BOUND = 4  # a check's bound, in calls' deadlines
# A version a replica is still loading: its label may wait for it (a replica starting up).
_IN_TRANSITION = ("START", "LOADING")


@dataclass
class Check:
    """One replica's answer: the first difference found, or none."""

    difference: str | None = None
    waiting: bool = False  # a label waits for its version to load
    incomplete: str | None = None  # why not every label needed was asked
    absent: set[tuple[str, str]] = field(default_factory=set)  # removed labels it does not have


class LabelCheck:
    """The checks of one gateway, each call bounded by ``timeout_s``."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.bound_s = CALLS_PER_BOUND * timeout_s
        # Labels each model's config has had while this process ran, until every replica that
        # answers has confirmed that a removed one is gone.
        self._seen: dict[str, set[str]] = {}

    def remember(self, config: ModelServerConfig) -> None:
        models = {model.name: model for model in config.model_config_list.config}
        self._seen = {name: self._seen.get(name, set()) for name in models}
        for name, model in models.items():
            self._seen[name].update(model.version_labels)

    def forget_absent(self, config: ModelServerConfig, checks: list[Check]) -> None:
        """Drop the removed labels that each of ``checks`` (complete) found absent."""
        if not checks or any(check.incomplete is not None for check in checks):
            return
        confirmed = set.intersection(*(check.absent for check in checks))
        for model in config.model_config_list.config:
            for name, label in confirmed:
                if name == model.name and label not in model.version_labels:
                    self._seen[name].discard(label)

    async def check(self, replica: ServingClient, config: ModelServerConfig) -> Check:
        check = Check()
        asked: list[tuple[str, str, int | None]] = []
        for model in config.model_config_list.config:
            wanted = dict(model.version_labels)
            for label in sorted(set(wanted) | self._seen.get(model.name, set())):
                asked.append((model.name, label, wanted.get(label)))
        todo = iter(asked)
        states: dict[str, dict[int, str]] = {}

        async def worker() -> None:
            for model, label, wanted in todo:  # shared: each label is asked once
                if check.difference is not None or check.incomplete is not None:
                    return
                try:
                    await self._label(replica, check, states, model, label, wanted)
                except ApiError as error:
                    check.incomplete = error.message

        try:
            async with asyncio.timeout(self.bound_s):
                await asyncio.gather(*(worker() for _ in range(CALLS_AT_ONCE)))
        except TimeoutError:
            check.incomplete = f"not all answered within {self.bound_s:.0f}s"
        return check

    async def _label(
        self,
        replica: ServingClient,
        check: Check,
        states: dict[str, dict[int, str]],
        model: str,
        label: str,
        wanted: int | None,
    ) -> None:
        """Compare one label with the config's ``wanted`` version (None: no such label)."""
        try:
            now: int | None = await replica.label_version(model, label, self.timeout_s)
            served = f"serves {model} {label} -> {now}"
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:  # no such label (or model) there
                if wanted is None:
                    check.absent.add((model, label))
                    return
                now, served = None, f"has no label {label} of {model}"
            elif code == grpc.StatusCode.NOT_FOUND or still_loading(error):
                # The label is there; its version is not served (yet): which, the state says.
                now, served = None, f"has {model} {label} on a version it does not serve"
                if still_loading(error) and wanted is not None:
                    check.waiting = True
                    return
            else:
                raise server_error(error, "GetModelMetadata") from error
        if now == wanted:
            return
        if wanted is not None:
            if model not in states:
                states[model] = await self._states(replica, model)
            state = states[model].get(wanted, "NOT_LOADED")
            if state in _IN_TRANSITION:
                check.waiting = True
                return
            check.difference = f"{served}, the config {wanted} ({state} there)"
        else:
            check.difference = f"{served}, the config has no such label"

    async def _states(self, replica: ServingClient, model: str) -> dict[int, str]:
        try:
            statuses: list[VersionStatus] = await replica.model_status(
                model, timeout_s=self.timeout_s
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise server_error(error, "GetModelStatus") from error
            return {}
        return {status.version: status.state for status in statuses}
