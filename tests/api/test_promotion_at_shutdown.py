"""A promotion cut short by the gateway's shutdown whose undo a model server does not answer in
time (loading, stalled) is answered 503 ``shutting_down``, and its undo is never left half made:
``labels.json`` and ``models.config`` are put back with undo records of their own, which the
next gateway to start rolls back from, sending the restored config to the model server
(api/promotion_undo.py, api/shutdown.py).

A real model server behind gRPC proxies that hold config reloads (each replica of a gateway's
``ipv4:`` target is one proxy); a real gateway with a short FDL_SHUTDOWN_GRACE_S, SIGTERMed while
its promotion's reload is held. Before, the undo ran on past the app's SETTLE_S: with two replicas
the process exited in the middle of it and the client got no answer at all; with one, closing the
gateway's channel happened to end it with a 503. Either way the files were put back with no
record, and the model server took the held reload of the change once it went through: it served
the label the client was told failed until it next polled the file, and no gateway sent it the
restored config (one that refuses the file at each poll kept the change).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from fdl.repository import CONFIG_FILE
from fdl.repository_files import has_record
from fdl.repository_reads import LABELS_FILE, read_labels
from harness.gateway import start_gateway
from harness.model_server import model_server_running
from harness.procs import wait_for
from harness.repository import SERVED, copy_repository
from tests.api.test_promotion_undone_in_full import served
from tests.api.test_shutdown_answers import _answer, _assert_shutting_down, _no_traceback, _promote
from tests.chaos.grpc_tap import RELOAD, Tap

MODEL, LABEL, VERSION = "promo", "canary", 3  # loaded: one reload per replica, the final one
WAIT_S = 60


class StalledReloads(Tap):
    """A proxy whose config reloads wait until released (a model server that does not answer
    them), then go through: a stalled server that resumes takes what it was sent."""

    def __init__(self, upstream: str) -> None:
        self.held = 0
        self.through = 0
        self.changed = threading.Condition()
        self.release = threading.Event()
        super().__init__(upstream)

    def forward(self, method: str, request: bytes, context: grpc.ServicerContext) -> Any:
        if method != RELOAD:
            return super().forward(method, request, context)
        with self.changed:
            self.held += 1
            self.changed.notify_all()
        self.release.wait(WAIT_S)
        try:
            return super().forward(method, request, context)
        finally:
            with self.changed:
                self.through += 1
                self.changed.notify_all()

    def wait(self, done: str, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: getattr(self, done) >= count, WAIT_S), done


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_promotion_whose_undo_is_not_answered_gets_503_and_leaves_the_undo_whole(
    replicas: int, pristine_repository: Path, redis_url: str, logs_dir: Path, tmp_path: Path
) -> None:
    models = copy_repository(pristine_repository, tmp_path / "models")
    config_before = (models / CONFIG_FILE).read_text()
    with model_server_running(f"undo-model-server-{replicas}", models, logs_dir, SERVED) as server:
        # Two replicas: the first answers, the second (last to be sent the change) does not.
        answering = Tap(server.target) if replicas == 2 else None
        stalled = StalledReloads(server.target)
        ports = [tap.port for tap in (answering, stalled) if tap is not None]
        gateway = start_gateway(
            f"gateway-undo-at-shutdown-{replicas}",
            logs_dir,
            redis_url,
            stalled.port,
            models,
            tmp_path / "secrets",
            FDL_SERVING_GRPC_TARGET="ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports),
            FDL_SHUTDOWN_GRACE_S="2",
            FDL_REPLICA_SYNC_S="0",
        )
        try:
            sock = _promote(gateway, MODEL, LABEL, VERSION)
            stalled.wait("held", 1)  # the change's reload
            assert read_labels(models)[MODEL] == {LABEL: VERSION}
            gateway.process.signal(signal.SIGTERM)
            _assert_shutting_down(*_answer(sock))
            assert gateway.process.popen.wait(timeout=WAIT_S) == -signal.SIGTERM
            _no_traceback(gateway)
            assert stalled.held == 2  # the undo's reload was sent, and never answered
            # Put back, with the records of an undo the replicas have not all taken.
            assert MODEL not in read_labels(models)
            assert (models / CONFIG_FILE).read_text() == config_before
            assert has_record(models, LABELS_FILE) and has_record(models, CONFIG_FILE)
        finally:
            stalled.release.set()
            gateway.close()
        # The stalled server resumes: the reloads it was sent go through, the change's included.
        stalled.wait("through", 2)
        stalled.close()
        if answering is not None:
            answering.close()
        # The next gateway to start takes the undo over and sends the restored config.
        following = start_gateway(
            f"gateway-after-undo-{replicas}",
            logs_dir,
            redis_url,
            server.port,
            models,
            tmp_path / "secrets-next",
            FDL_REPLICA_SYNC_S="0",
        )
        try:
            wait_for(
                lambda: (
                    served(server, MODEL, LABEL) is None
                    and not has_record(models, LABELS_FILE)
                    and not has_record(models, CONFIG_FILE)
                ),
                WAIT_S,
                f"the model server to drop {MODEL}'s {LABEL} label",
                interval=0.2,
                check=server.process.ensure_alive,
            )
        finally:
            following.close()
    assert MODEL not in read_labels(models)
    assert (models / CONFIG_FILE).read_text() == config_before
