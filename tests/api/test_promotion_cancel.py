"""A promotion's request cancelled while its change is being kept (uvicorn cancels the requests
left at the end of its graceful shutdown) leaves ``labels.json`` and ``models.config`` agreeing,
with no undo records: the change stands once the labels' record is dropped, and nothing may put
the old config back after that.

The cancellation lands at a known point: an audit hook sees the removal of the config's undo
record (after the labels' record is gone) and cancels the promotion's task there, as uvicorn
would; where the removal runs in a worker thread, the hook holds that thread until the cancelled
task has ended, so whatever the task does on its cancellation runs before the thread goes on.
A real ``Promoter`` over a real model server and repository; nothing of ours is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from api.metadata_cache import MetadataCache
from api.promotion import Promoter
from api.serving_client import ServingClient
from fdl.repository import CONFIG_FILE, render_config
from fdl.repository_files import has_record
from fdl.repository_reads import LABELS_FILE, read_labels
from harness.model_server import ModelServer, model_server_running
from harness.repository import SERVED, copy_repository


class CancelAtRemoval:
    """An audit hook (they cannot be removed: it does nothing unless armed) that cancels
    ``task`` once, when ``path`` is about to be removed."""

    def __init__(self) -> None:
        self.armed: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any], Path] | None = None
        self.fired = False
        self.task_done = threading.Event()
        self.loop_thread = 0

    def arm(self, task: asyncio.Task[Any], path: Path) -> None:
        self.loop_thread = threading.get_ident()
        self.armed = (asyncio.get_running_loop(), task, path)
        task.add_done_callback(lambda _: self.task_done.set())

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.armed is None or event != "os.remove":
            return
        loop, task, path = self.armed
        if os.fsdecode(args[0]) != str(path):
            return
        self.armed, self.fired = None, True
        loop.call_soon_threadsafe(task.cancel)
        if threading.get_ident() != self.loop_thread:
            self.task_done.wait(timeout=30)


HOOK = CancelAtRemoval()
_installed = False


async def promote_cancelled_while_kept(server: ModelServer, model_dir: Path) -> None:
    client = ServingClient(server.target, 10.0)
    try:
        promoter = Promoter(client, MetadataCache(client, 1.0), model_dir, None, timeout_s=30)
        task = asyncio.ensure_future(promoter.set_label("promo", "canary", 3))
        HOOK.arm(task, model_dir / f".{CONFIG_FILE}.undo")
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        HOOK.armed = None
        await client.close()


def test_a_cancel_while_the_change_is_kept_leaves_the_files_agreeing(
    pristine_repository: Path, logs_dir: Path, tmp_path: Path
) -> None:
    global _installed
    if not _installed:
        sys.addaudithook(HOOK)
        _installed = True
    model_dir = copy_repository(pristine_repository, tmp_path / "models")
    with model_server_running("cancel-model-server", model_dir, logs_dir, SERVED) as server:
        asyncio.run(promote_cancelled_while_kept(server, model_dir))
    assert HOOK.fired
    # The labels' record was dropped before the cancel: the change stands, in both files.
    assert read_labels(model_dir)["promo"] == {"canary": 3}
    assert (model_dir / CONFIG_FILE).read_text() == render_config(model_dir)
    assert not has_record(model_dir, LABELS_FILE) and not has_record(model_dir, CONFIG_FILE)
