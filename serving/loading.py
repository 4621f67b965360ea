"""Loading one version as TF Serving does: the SavedModel in a Session, then warmup."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from fdl import contract
from serving.batching_config import version_batching
from serving.records import ManagerOptions, VersionRecord
from serving.servable import Servable
from serving.warmup import warm_up

log = logging.getLogger("serving.manager")


def load_version(name: str, record: VersionRecord, options: ManagerOptions) -> Servable:
    """A loaded, warmed-up version with its batching and metrics hooks; raises (with the Session
    closed) when TF Serving would reject the version."""
    log.info("loading %s version %d from %s", name, record.version, record.path)
    started, loaded = time.monotonic(), False
    try:
        servable = Servable(name, record.version, record.path, options.session_config, options.tags)
        loaded = True
    except OSError as error:  # TensorFlow's "SavedModel file does not exist at ..."
        if (denied := _denied(record.path)) is None:
            raise
        # The same type, so the same status code: only the message says what happened.
        raise type(error)(f"{denied}: the model server cannot read it ({error})") from error
    finally:
        if options.on_load is not None:  # the SavedModel load alone, as TensorFlow times it
            options.on_load(str(record.path), loaded, time.monotonic() - started)
    try:
        servable.on_run = options.on_run
        servable.batching = version_batching(
            record.path, options.batching, options.per_model_batching
        )
        if options.enable_warmup:
            iterations = options.warmup_iterations
            started = time.monotonic()
            count = warm_up(servable, iterations)
            if count is not None:
                seconds = time.monotonic() - started
                each = f", each run {iterations} times" if iterations > 1 else ""
                log.info(
                    "%s version %d: %d warmup requests%s in %.0f ms",
                    name, record.version, count, each, seconds * 1e3,
                )  # fmt: skip
                if options.on_warmup is not None:
                    options.on_warmup(str(record.path), seconds, count)
    except BaseException:
        servable.session.close()
        raise
    return servable


def _denied(path: Path) -> str | None:
    """``Permission denied: <path>`` when this process may not look into the version's folder
    (TensorFlow reports such a folder as one without a SavedModel), else None."""
    try:
        os.listdir(path)
        for name in contract.GRAPH_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.stat(path / name)
    except PermissionError as error:
        return f"{error.strerror}: {error.filename}"
    except OSError:
        return None
    return None
