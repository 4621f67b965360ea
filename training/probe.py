"""``fdl-worker-probe``: the training worker's liveness probe (the Kubernetes ``livenessProbe``, the
compose healthcheck). It fails only when this worker does not answer while Redis does.

`celery inspect ping` alone failed whenever Redis did (a failover, a restart, a full disk): after
three failures the kubelet restarted every worker at once, killing the jobs that would have
paused and gone on once Redis was back (docs/training.md, "Reliability"), and a restart cannot
mend Redis. This probe:

1. reads ``FDL_REDIS_URL`` as the worker does (its settings: the ``FDL_`` variables, the ``.env``
   of the current folder), never from its arguments, where ``ps`` would show the password;
2. PINGs Redis (``--redis-timeout``, 3 s, its name's lookup included): unreachable, too slow, or
   refusing (``LOADING``, ``MISCONF``...): one line on stdout saying so, exit 0, not this
   worker's fault;
3. sends Celery's ping to this worker's own node and waits ``--timeout`` (10 s) for its reply: a
   reply prints ``celery@host: pong``, exit 0; Redis away meanwhile (gone, too slow, or refusing
   the writes a ping makes: ``READONLY``, ``OOM``) is as in 2. The node is ``--destination``,
   else ``CELERY_WORKER_HOSTNAME``, else ``celery@<hostname>``, expanded as the worker's
   ``-n``/``--hostname`` is (``worker2@%h``; a bare ``worker2`` is ``celery@worker2``);
4. no reply: Redis is PINGed again (it may have gone meanwhile: as in 2); it answers, so the
   worker is hung or gone: one line on stderr, exit 1.

One deadline covers them all, :func:`bound_s`: ``timeout + 2 * redis-timeout + 2`` s (18 s by
default) from step 2, plus Python's start-up (about 1 s; deploy/lint/worker_probe.py allows 5 s).
Each step runs in a thread, abandoned at its end (the process then ends with :func:`os._exit`),
so that neither a hung Redis nor a dead resolver (which no signal interrupts) holds the probe:
step 2 ends ``redis-timeout`` after the start, step 3 ``redis-timeout`` before the deadline. A
PING unanswered then is Redis away (exit 0); a Celery step still running is no reply (step 4).

Only Redis away passes: a connection refused or lost, a timeout, an ``OSError``, ``LOADING``,
``READONLY``, ``OOM``, ``MISCONF`` (as :mod:`fdl.store_retry` retries them). Anything else is no
outage and exits 1 with one line on stderr, so that a restart takes the worker a fixed Secret or
ConfigMap: a password Redis refuses (``WRONGPASS``, ``NOAUTH``), a command it forbids (ACL
``NOPERM``), a database out of range, a TLS certificate that fails verification, an invalid
option of the URL. Invalid settings exit 1 with the worker's own message; a URL no client takes
(``sentinel://``, a port out of range) with one line naming the problem.
Run it as a console script (its own folder on ``sys.path``, never the current one), as
``fdl-worker`` is run; ``python -m training.probe`` works too. Its steps' threads are in
:mod:`training.probe_steps`, what an error means and the line that tells it in
:mod:`training.probe_errors`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from training.probe_errors import AWAY, PASSWORD, describe, verdict_of
from training.probe_steps import Overran, left_behind, within

PROG = "fdl-worker-probe"
TIMEOUT_S = 10.0
REDIS_TIMEOUT_S = 3.0
# Seconds the Celery step may take beyond its reply timeout (connecting, publishing, cleaning up).
MARGIN_S = 2.0


def bound_s(timeout_s: float, redis_timeout_s: float) -> float:
    """The most seconds a probe takes from its first PING to its verdict."""
    return timeout_s + 2 * redis_timeout_s + MARGIN_S


def where(url: str) -> str:
    """Where the URL's Redis is, for a line (no password); ValueError for a URL that redis-py,
    the worker's job store, does not take."""
    kwargs: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    return f"Redis at {kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def node_name(name: str | None) -> str:
    """The node a worker started with ``-n name`` (None: without it) takes, as Celery's
    ``--hostname`` option expands it: ``worker2@%h`` is ``worker2@<hostname>``."""
    from celery.utils.nodenames import default_nodename, host_format

    return str(host_format(default_nodename(name)))


def ping_redis(url: str, timeout_s: float) -> None:
    """PING Redis once; raises what redis-py raises."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    finally:
        client.close()


def worker_answers(
    url: str, queue: str, node: str, timeout_s: float, redis_timeout_s: float
) -> bool:
    """Whether ``node`` answers Celery's ping within ``timeout_s``; raises what the broker
    raises."""
    from fdl.queue import make_celery

    app = make_celery(url, queue, send_timeout_s=redis_timeout_s)
    try:
        replies = app.control.ping(destination=[node], timeout=timeout_s)
        return any(node in reply for reply in replies or [])
    finally:
        app.close()


def _seconds(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def parser(exit_on_error: bool = True) -> argparse.ArgumentParser:
    """The probe's options (``exit_on_error=False``: errors raised, no ``--help``, for the
    deployment lint)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        add_help=exit_on_error,
        exit_on_error=exit_on_error,
    )
    parser.add_argument("--timeout", type=_seconds, default=TIMEOUT_S, help="seconds for a reply")
    parser.add_argument(
        "--redis-timeout", type=_seconds, default=REDIS_TIMEOUT_S, help="seconds for a PONG"
    )
    parser.add_argument(
        "--destination",
        help="the worker's -n/--hostname (default: CELERY_WORKER_HOSTNAME, else celery@%%h)",
    )
    return parser


def probe(args: argparse.Namespace) -> int:
    """The verdict, printed; its exit status."""
    from fdl.settings import SETTINGS_ERRORS, settings_problem
    from training.settings import get_settings

    try:
        settings = get_settings()
        url = settings.require_redis_url()
    except SETTINGS_ERRORS as error:
        print(f"{PROG}: {settings_problem(error)}", file=sys.stderr)
        return 1
    except RuntimeError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    try:
        redis_at = where(url)
    except ValueError as error:
        print(f"{PROG}: FDL_REDIS_URL: {describe(error)}", file=sys.stderr)
        return 1
    node = node_name(args.destination or os.environ.get("CELERY_WORKER_HOSTNAME") or None)
    secret = unquote(urlsplit(url).password or "") or None

    def outage(problem: str) -> int:
        print(f"{PROG}: {redis_at} is away or refuses ({problem}): not {node}'s fault, passing")
        return 0

    def ping(until: float) -> None:
        try:
            within(until, lambda: ping_redis(url, args.redis_timeout))
        except Overran:
            raise Overran(f"no PONG within {args.redis_timeout:g} s") from None

    start = time.monotonic()
    deadline = start + bound_s(args.timeout, args.redis_timeout)
    try:
        ping(start + args.redis_timeout)
        try:
            answered = within(
                deadline - args.redis_timeout,
                lambda: worker_answers(
                    url, settings.training_queue, node, args.timeout, args.redis_timeout
                ),
            )
        except Overran:
            answered = False  # a Redis that stopped answering meanwhile: the PING below tells
        if answered:
            print(f"{node}: pong")
            return 0
        ping(deadline)
    except Overran as late:
        return outage(str(late))
    except Exception as error:
        verdict = verdict_of(error)
        if verdict == AWAY:
            return outage(describe(error, secret))
        problem = (
            "refuses the password"
            if verdict == PASSWORD
            else "cannot be probed: a setting or Redis's configuration, not an outage"
        )
        print(f"{PROG}: {redis_at} {problem} ({describe(error, secret)})", file=sys.stderr)
        return 1
    print(
        f"{PROG}: {node} did not answer a ping within {args.timeout:g} s while {redis_at} "
        "answers: the worker is hung or gone",
        file=sys.stderr,
    )
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    code = probe(parser().parse_args(argv))
    if left_behind:  # a step still blocked (a hung Redis, a dead resolver): exit without it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
