"""The gateway's background convergence of the model-server replicas on the repository's config.

A change of labels reaches the replicas that answered when it was made (:mod:`api.replicas`), and
a rollback of a dead change by a reader, a publish, the job reaper or ``fdl up`` reaches none: a
replica left out keeps its labels, and one that had taken a dead change in full refuses the
restored config at each poll of the file (:mod:`api.replica_configs`). So every
``FDL_REPLICA_SYNC_S`` each gateway asks each replica whether its labels are the config's
(:mod:`api.replica_check`). Where one differs, or a change was left half made, it tries the
repository's lock without waiting (held: a change in progress, which reaches the replicas itself;
the round is skipped), asks again under it and sends the config to each replica that still
differs, bridged where needed (:meth:`api.promotion.Promoter.sync_replicas`; a change of this
gateway that comes for the lock meanwhile stops the send and goes first).

What a send cannot fix is not sent round after round: a replica that refuses the config, still
differs once it took it (a version that does not load there), or differs again from the same
config file soon after it took it (another config source: a gateway with another repository in
front of the same model servers, an operator) is sent it again only after a backoff that doubles
up to ``BACKOFF_MAX_S``, and reset once it agrees. Each replica's trouble is logged once when it
starts and once when it ends, and counted in ``fdl_gateway_replica_sync_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from prometheus_client import Counter, Gauge

from api.errors import ApiError
from api.promotion import Promoter
from api.replica_check import Check, LabelCheck
from api.replica_configs import parse_config
from api.replicas import reachable_replicas
from api.serving_client import PROBE_MODEL, ServingClient
from fdl.repository import CONFIG_FILE
from fdl.repository_files import has_record
from fdl.repository_reads import LABELS_FILE
from fdl.wire.tfs_pb2 import ModelServerConfig

log = logging.getLogger(__name__)
BACKOFF_MAX_S = 600.0
BACKOFF_FIRST_S = 10.0  # at least; two rounds where they are longer
# A replica that differs from an unchanged config file this soon after it took it has been sent
# another config meanwhile; one that agreed this long after its last send has recovered.
SETTLED_S = BACKOFF_MAX_S
SYNCS = Counter(
    "fdl_gateway_replica_sync_total",
    "Replica sync outcomes per replica: fixed, refused, ineffective, differs_again, unchecked",
    ["outcome"],
)
BACKING_OFF = Gauge(
    "fdl_gateway_replica_sync_backing_off", "Replicas the replica sync leaves alone for a while"
)
# The config file's identity: a file written again (a change, a rollback) is another config.
ConfigId = tuple[int, int, int, int]


@dataclass
class _Replica:
    """What the sync remembers of one replica (by target)."""

    failures: int = 0  # sends in a row that did not fix it
    retry_at: float = 0.0  # no send before (monotonic)
    fixed: tuple[ConfigId, float] | None = None  # the config file it took and agreed with, when


class ReplicaSync:
    """The background task of one gateway (``interval_s`` 0: none)."""

    def __init__(self, promoter: Promoter, interval_s: float, check_timeout_s: float) -> None:
        self.promoter = promoter
        self.interval_s = interval_s
        self.labels = LabelCheck(check_timeout_s)
        self._problem: str | None = None  # the last round's, logged once until it changes
        self._replicas: dict[str, _Replica] = {}
        self._told: dict[str, str] = {}  # each replica's difference, logged once until it changes
        self._unchecked: set[str] = set()  # replicas whose last check did not finish (logged)
        self._fixed = 0  # replicas that took the config and agree, this round
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._run(), name="replica-sync")

    async def stop(self) -> None:
        """Cancel the task and wait for it (a round in progress gives its lock back)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def bound_s(self) -> float:
        """The longest a round may take: its checks, and a bridged reload under the lock."""
        return self.promoter.timeout_s + 3 * self.labels.bound_s + 2 * self.labels.timeout_s

    async def _run(self) -> None:
        while True:
            # Spread, so the gateways of one deployment do not all ask at the same moment.
            await asyncio.sleep(self.interval_s * random.uniform(0.9, 1.1))
            problem: str | None = None
            trace: Exception | None = None
            try:
                async with asyncio.timeout(self.bound_s()):
                    await self.round()
            except TimeoutError:
                problem = f"a round took longer than {self.bound_s():.0f}s and was stopped"
            except ApiError as error:  # the repository's lock file or a roll-back failed
                problem = error.message
            except Exception as error:  # not foreseen: its trace, once; the next round tries again
                problem, trace = repr(error), error
            if problem != self._problem:
                if problem is not None:
                    log.warning("replica sync: %s", problem, exc_info=trace)
                else:
                    log.info("replica sync: rounds succeed again")
            self._problem = problem

    async def round(self) -> bool:
        """One look at every replica; whether a replica took the config and agrees now."""
        read = await self._config()
        if read is None:
            return False
        identity, config = read
        self.labels.remember(config)
        async with reachable_replicas(
            self.promoter.client, PROBE_MODEL, self.promoter.tls
        ) as replicas:
            checks = await asyncio.gather(*(self.labels.check(r, config) for r in replicas))
            targets = [replica.target for replica in replicas]
        now = time.monotonic()
        self._forget_others(targets, now)
        self.labels.forget_absent(config, checks)
        due = [self._judge(t, c, identity, now) for t, c in zip(targets, checks, strict=True)]
        BACKING_OFF.set(sum(1 for state in self._replicas.values() if state.failures))
        if not any(due) and not await asyncio.to_thread(self._half_made):
            return False
        self._fixed = 0
        return await self.promoter.sync_replicas(self._send) and self._fixed > 0

    def _judge(self, target: str, check: Check, identity: ConfigId, now: float) -> bool:
        """Log what changed of one replica's check and keep its backoff; whether the config is
        due to it."""
        state = self._replicas.setdefault(target, _Replica())
        if check.difference is None and check.incomplete is not None:
            SYNCS.labels("unchecked").inc()
            if target not in self._unchecked:
                self._unchecked.add(target)
                log.warning(
                    "replica %s: its labels were not all checked (%s); asked again next round",
                    target,
                    check.incomplete,
                )
            return False
        if target in self._unchecked:
            self._unchecked.discard(target)
            log.info("replica %s: its labels are checked again", target)
        if check.difference is None:
            self._told.pop(target, None)
            settled = state.fixed is None or now - state.fixed[1] >= SETTLED_S
            if state.failures and not check.waiting and settled:
                log.info("replica %s agrees with the model config again", target)
                state.failures, state.retry_at = 0, 0.0
            return False
        fixed_with, fixed_at = state.fixed or (None, 0.0)
        if fixed_with == identity and now - fixed_at < SETTLED_S:
            took, state.fixed = now - fixed_at, None
            self._failed(
                target,
                f"{check.difference} again {took:.0f}s after it took the same config: another "
                "config source (a gateway with another repository in front of the same model "
                "servers, an operator) may be sending it its own",
                "differs_again",
            )
            return False
        return now >= state.retry_at

    def _failed(self, target: str, problem: str, outcome: str) -> None:
        """A send that did not fix ``target``: the next waits longer (logged when it starts)."""
        SYNCS.labels(outcome).inc()
        state = self._replicas.setdefault(target, _Replica())
        state.failures += 1
        delay = min(BACKOFF_MAX_S, self._backoff_first_s() * 2 ** (state.failures - 1))
        state.retry_at = time.monotonic() + delay
        if state.failures == 1:
            log.warning(
                "replica %s %s; the config is sent to it again in %.0fs at the soonest, then "
                "less and less often (at most every %.0fs) until it agrees",
                target,
                problem,
                delay,
                BACKOFF_MAX_S,
            )

    def _backoff_first_s(self) -> float:
        return min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, 2 * self.interval_s))

    def _forget_others(self, targets: list[str], now: float) -> None:
        """Drop what is kept of replicas that did not answer this round (a pod gone), but a
        backoff that still runs (one that did not answer for a moment)."""
        seen = set(targets)
        self._replicas = {t: s for t, s in self._replicas.items() if t in seen or s.retry_at > now}
        self._told = {target: told for target, told in self._told.items() if target in seen}
        self._unchecked &= seen

    async def _send(self, replicas: list[ServingClient]) -> None:
        """Under the lock (:meth:`api.promotion.Promoter.sync_replicas`): the config to each
        replica that is due and, asked again, still differs; then asked once more."""
        read = await self._config()
        if read is None:
            return
        identity, config = read
        now = time.monotonic()
        due = [r for r in replicas if now >= self._replicas.get(r.target, _Replica()).retry_at]
        checks = await asyncio.gather(*(self.labels.check(r, config) for r in due))
        deadline = self.promoter.replicas.deadline()
        sent = []
        for replica, check in zip(due, checks, strict=True):
            if check.difference is None:
                continue
            if deadline - time.monotonic() < self.promoter.timeout_s / 2:
                break  # the others in the next round
            if self._told.get(replica.target) != check.difference:
                log.info(
                    "replica %s %s: sending it the model config", replica.target, check.difference
                )
                self._told[replica.target] = check.difference
            try:
                await self.promoter.replicas.reload(replica, config, deadline)
            except ApiError as error:
                self._failed(
                    replica.target, f"did not take the model config: {error.message}", "refused"
                )
                continue
            sent.append(replica)
        afters = await asyncio.gather(*(self.labels.check(r, config) for r in sent))
        for replica, after in zip(sent, afters, strict=True):
            if after.difference is not None:
                problem = f"took the model config and still {after.difference}"
                self._failed(replica.target, problem, "ineffective")
                continue
            SYNCS.labels("fixed").inc()
            self._fixed += 1
            if after.incomplete is None and not after.waiting:
                fixed = (identity, time.monotonic())
                self._replicas.setdefault(replica.target, _Replica()).fixed = fixed

    async def _config(self) -> tuple[ConfigId, ModelServerConfig] | None:
        """The config file's identity and its config; None where there is none yet (``fdl up``
        writes it)."""
        try:
            identity, text = await asyncio.to_thread(_read, self.promoter.repository.config_path)
        except FileNotFoundError:
            return None
        try:
            return identity, parse_config(text)
        except text_format.ParseError as error:
            raise ApiError(
                409, "invalid_config", f"{CONFIG_FILE} does not parse: {error}"
            ) from error

    def _half_made(self) -> bool:
        """Whether a change's undo records are there (live, or left by a dead process)."""
        folder = self.promoter.repository.model_dir
        return has_record(folder, LABELS_FILE) or has_record(folder, CONFIG_FILE)


def _read(path: Path) -> tuple[ConfigId, str]:
    stat = path.stat()
    # ctime too: a rollback renames the same inode back (an undo record is a hard link) with
    # its old mtime and size, and only the rename's ctime tells the file was changed meanwhile.
    return (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size), path.read_text()
