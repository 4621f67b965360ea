"""``fdl-worker``: the training worker (one Celery worker process), started through our app object.

``celery -A training.tasks worker`` looked ``training.tasks`` up by name with the current folder
first on ``sys.path`` (Celery's ``find_app``): in a folder of the user's own with a
``training.py`` or a ``training/`` package (where `fdl up` runs, for its ``.env``), that module
was imported instead of ours, and the worker crashed or ran the user's code. This console script
imports the app itself (a console script has its own folder on ``sys.path``, never the current
one) and hands the object to Celery's command line, which then looks no module up by name; the
app names no modules for Celery's loader to import (``imports``/``include`` are empty).

The worker still runs in the current folder, so the settings read the ``.env`` found there.
Arguments are worker options, added after the defaults below (a repeated option takes the later
value): ``fdl-worker -n worker2@%h``, ``fdl-worker -Q other``; a leading ``worker`` (the form
Celery's usage lines print) is dropped. Options that are not given may come from Celery's
``CELERY_WORKER_*`` variables (``CELERY_WORKER_QUEUES``, say), never the defaults below, which
are always given. Celery's variables that would import a module of the current folder or take
the broker away from ``FDL_REDIS_URL`` are ignored, with a line naming them (:data:`IGNORED`).
The pool process is replaced after a job that took it past ``FDL_MAX_MEMORY_PER_CHILD_MB``, or
after ``FDL_MAX_JOBS_PER_CHILD`` jobs (:func:`child_limits`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from training.settings import WorkerSettings

# One process per GPU: concurrency 1, no prefetch (long jobs, acks_late). No -Q: the worker
# consumes the app's default queue, FDL_TRAINING_QUEUE, the one the gateway sends to. No gossip
# and no mingle: nothing here uses them (jobs are cancelled through their records, not revokes),
# mingle made each start wait for its neighbours' replies, and gossip's restart after a lost
# Redis connection logged a traceback from kombu (an AttributeError) before it reconnected.
WORKER_OPTIONS = (
    "--concurrency",
    "1",
    "--prefetch-multiplier",
    "1",
    "--loglevel",
    "INFO",
    "--without-gossip",
    "--without-mingle",
)
# The variables of Celery (celery/bin/celery.py's options, also read as CELERY_<OPTION>; its
# app's settings, celery/app/utils.py; its app's loader, celery/app/base.py and
# celery/loaders/) that a project sets for its own `celery` commands and that would, here:
IGNORED = (
    # look a module up by name, the current folder first: an app, a loader (`default` imports
    # celeryconfig.py), a configuration module;
    "APP",
    "CELERY_APP",
    "LOADER",
    "CELERY_LOADER",
    "CONFIG_MODULE",
    "CELERY_CONFIG",
    "CELERY_CONFIG_MODULE",
    # or put the broker or a result backend (which may be a class named by module) elsewhere
    # than FDL_REDIS_URL, which they win over.
    "BROKER_URL",
    "CELERY_BROKER",
    "CELERY_BROKER_URL",
    "CELERY_BROKER_READ_URL",
    "CELERY_BROKER_WRITE_URL",
    "RESULT_BACKEND",
    "CELERY_RESULT_BACKEND",
)
DETACH_REFUSED = "fdl-worker: --detach is not supported; run it under a supervisor"


def worker_argv(extra: Sequence[str]) -> list[str]:
    """The arguments of Celery's command line: the worker, our options, then ``extra`` (less a
    leading ``worker``)."""
    extra = list(extra)
    if extra[:1] == ["worker"]:
        del extra[0]
    return ["worker", *WORKER_OPTIONS, *extra]


def child_limits(settings: WorkerSettings) -> dict[str, int | None]:
    """Celery's settings that replace the pool process after a job (``FDL_MAX_MEMORY_PER_CHILD_MB``,
    ``FDL_MAX_JOBS_PER_CHILD``; None: never). The process ends after its job has ended and its
    result reached the main process (billiard's ``EX_RECYCLE``, not a lost process: no
    ``WorkerLostError``, :mod:`training.lost_process` is not called), and a fresh one takes the
    next job. Celery reads the peak resident size (``ru_maxrss``), in KiB. Worker options given
    (``--max-memory-per-child``, ``--max-tasks-per-child``) win over these."""
    memory_kib = settings.max_memory_per_child_mb * 1024
    return {
        "worker_max_memory_per_child": memory_kib or None,
        "worker_max_tasks_per_child": settings.max_jobs_per_child or None,
    }


def ignore_celery_variables() -> list[str]:
    """Removes the :data:`IGNORED` variables from the environment; the names of those set."""
    return [name for name in IGNORED if os.environ.pop(name, None) is not None]


def refusing_detach(callback: Callable[..., Any]) -> Callable[..., Any]:
    """The worker command's callback, refusing ``detach`` however it was given (``-D``,
    ``--detach``, among other short flags as in ``-ED``, or ``CELERY_WORKER_DETACH``): Celery
    would start ``python -m celery worker`` again, which imports ``celery`` and the app from
    the current folder."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("detach"):
            click.echo(DETACH_REFUSED, err=True)
            raise click.exceptions.Exit(2)
        return callback(*args, **kwargs)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    ignored = ignore_celery_variables()
    if ignored:
        names = ", ".join(ignored)
        print(f"fdl-worker: ignoring {names} (our app and FDL_REDIS_URL)", file=sys.stderr)
    # Imported here: an invalid setting stops the process in one line (training/settings.py).
    from celery.bin.celery import celery
    from celery.bin.worker import worker

    from fdl.redis_policy import check_when_worker_ready
    from training.tasks import app, settings

    app.conf.update(child_limits(settings))
    check_when_worker_ready(settings.require_redis_url())  # an evicting Redis: an ERROR line
    # What ``app.start`` does (the -A option's default is the app object itself), with the
    # `celery` command's handling of exit codes, usage errors and CELERY_ variables.
    (option,) = (param for param in celery.params if param.name == "app")
    option.default = app
    callback = worker.callback
    worker.callback = refusing_detach(callback) if callback else None
    try:
        celery.main(args=worker_argv(extra), prog_name="fdl-worker", auto_envvar_prefix="CELERY")
    finally:
        option.default = None
        worker.callback = callback
    return 0  # not reached: the command always exits
