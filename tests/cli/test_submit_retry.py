"""`fdl train` submits its job once, whatever becomes of the gateway's answer (fdl/cli_retry.py):
it sends a new ``Idempotency-Key`` and, when the answer is lost (the connection closed or reset
before or in the middle of it), when the gateway is unavailable (503: its Redis restarting) or
still queueing the first try (409), sends the same submission again under the same key, and
reports the one job the gateway made, saying each retry on stderr. Other 4xx answers, and a
connection refused at the first try, are not retried. Giving up (or stopped) after a try that may
have reached the gateway, it says that a job may exist.

Real gateways on a Redis of this module's own; between the CLI and the gateway, a TCP proxy that
forwards the first ``POST /v1/jobs`` and loses its answer (tests/cli/lost_answer_proxy.py)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis

from fdl.cli_client import ExitCode
from fdl.job_records import INDEX_KEY
from fdl.job_scripts import CONFIRM_SCRIPT
from harness.cli import BackgroundCli
from harness.gateway import ADMIN_KEY, Gateway
from harness.procs import REPO_ROOT, free_port, wait_for
from harness.redis import RestartableRedis
from tests.cli.lost_answer_proxy import LostAnswerProxy
from tests.redis_fault_proxy import HOLD_LIMIT_S, RedisFaultProxy, Rule

TRAIN = ["train", "mnist_logreg", "--epochs", "1", "--detach"]
CONFIRM = hashlib.sha1(CONFIRM_SCRIPT.encode()).hexdigest().encode()  # EVALSHA <sha> of it
# A dim line on stderr for each retry (fdl/cli_retry.py:_say_retry).
RETRY_LINE = (
    r"submitting: (.+); sending it again under the same Idempotency-Key in [\d.]+ s "
    r"\(try (\d) of 8\)"
)
CHECK_FIRST = "; the submission may still have created a job: check `fdl jobs` before submitting"


@contextlib.contextmanager
def proxy_to(gateway: Gateway, **kwargs: Any) -> Iterator[LostAnswerProxy]:
    proxy = LostAnswerProxy(gateway.url, **kwargs)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def gateway(own_gateway: Gateway) -> Gateway:
    """The gateway on this module's own Redis (tests/cli/conftest.py)."""
    return own_gateway


@pytest.fixture
def jobs(own_redis: RestartableRedis) -> Callable[[], set[str]]:
    """The ids of the jobs in the store."""

    def ids() -> set[str]:
        with redis.Redis.from_url(own_redis.url, decode_responses=True) as client:
            return set(client.zrange(INDEX_KEY, 0, -1))

    return ids


def fdl(url: str, *args: str, api_key: str = ADMIN_KEY) -> BackgroundCli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    return BackgroundCli(list(args), env | {"FDL_URL": url, "FDL_API_KEY": api_key})


def ended(cli: BackgroundCli, code: int) -> tuple[list[str], str]:
    """Why `fdl train` tried again, each time (its retry lines, tries 2, 3, … in order), and the
    rest of what it printed, once it exited with ``code``."""
    assert cli.popen.wait(60) == code, cli.output()
    cli.pump.join(10)
    out, whys = cli.output(), list[str]()
    while found := re.match(RETRY_LINE + "\n", out):
        assert int(found.group(2)) == len(whys) + 2, out
        whys.append(found.group(1))
        out = out[found.end() :]
    return whys, out


def submitted(cli: BackgroundCli, retries: int | None = 0) -> str:
    """The id of the job that `fdl train --detach` reports, having printed nothing else but
    ``retries`` retry lines (None: any number)."""
    whys, out = ended(cli, ExitCode.OK)
    assert retries is None or len(whys) == retries, whys
    found = re.fullmatch(
        r"Job (\w+) submitted \(mnist_logreg\)\.\nFollow it with: fdl job \1 "
        r"--follow\n",
        out,
    )
    assert found, out
    return found.group(1)


@pytest.mark.parametrize(
    ("keep", "reset"),
    [(0, False), (0, True), (12, False)],
    ids=["closed-before-the-answer", "reset", "closed-mid-answer"],
)
def test_a_lost_answer_is_sent_again_under_the_same_key_making_one_job(
    gateway: Gateway, jobs: Callable[[], set[str]], keep: int, reset: bool
) -> None:
    before, started = jobs(), time.monotonic()
    with proxy_to(gateway, keep=keep, reset=reset) as proxy:
        cli = fdl(proxy.url, *TRAIN)
        job_id = submitted(cli, retries=1)
        assert time.monotonic() - started < 20  # retried at once, not after a read timeout
        assert proxy.lost.is_set() and proxy.statuses == [202]
        [key, again] = proxy.keys
        assert re.fullmatch("[0-9a-f]{32}", key) and again == key
        assert jobs() - before == {job_id}
        [why] = ended(cli, ExitCode.OK)[0]
        assert re.fullmatch(r"the answer was lost \((ReadError|RemoteProtocolError)\)", why)
        # The next `fdl train` is another job: a key of its own.
        other = submitted(fdl(proxy.url, *TRAIN))
        assert other != job_id and len(set(proxy.keys)) == 2
    assert jobs() - before == {job_id, other}


def test_a_retry_while_the_first_is_being_queued_waits_for_it(
    own_redis: RestartableRedis,
    jobs: Callable[[], set[str]],
    lone_gateway: Callable[..., AbstractContextManager[Gateway]],
) -> None:
    """The first try's confirmation of its message is held on its way to Redis, and then its
    connection closed (the answer lost): the retries are answered 409 (still being
    queued) until it is let go, then the first try's job."""
    before = jobs()
    upstream = ("127.0.0.1", own_redis.port)
    confirm = Rule(CONFIRM, "hold_request", 1)
    with (
        RedisFaultProxy(upstream, confirm) as held,
        lone_gateway("held", held.url(0), FDL_JOB_STORE_TIMEOUT_S=str(HOLD_LIMIT_S)) as gateway,
        proxy_to(gateway, cut_when=confirm.came) as proxy,
    ):
        cli = fdl(proxy.url, *TRAIN)
        try:
            assert confirm.came.wait(30), cli.output()
            wait_for(lambda: 409 in proxy.statuses, 20, "a retry answered 409")
            confirm.release()
            job_id = submitted(cli, retries=None)
            whys = ended(cli, ExitCode.OK)[0]
        finally:
            cli.stop()
        assert proxy.statuses[-1] == 202 and len(set(proxy.keys)) == 1, proxy.statuses
        queued = "409 idempotency_key_in_use (an earlier try is still being queued)"
        assert f"the gateway answered {queued}" in whys, whys
        assert len(whys) == len(proxy.keys) - 1, whys
    assert jobs() - before == {job_id}


def test_a_gateway_whose_redis_restarts_is_sent_the_job_again(
    own_redis: RestartableRedis, gateway: Gateway, jobs: Callable[[], set[str]]
) -> None:
    """503 (the store unreachable) is waited out as its Retry-After asks."""
    before = jobs()
    with proxy_to(gateway, lose=False) as proxy:
        own_redis.stop()
        cli = fdl(proxy.url, *TRAIN)
        try:
            wait_for(lambda: 503 in proxy.statuses, 30, "a 503 while Redis is away")
            own_redis.start()
            job_id = submitted(cli, retries=None)
        finally:
            cli.stop()
            if own_redis.process is None:
                own_redis.start()
        assert proxy.statuses[-1] == 202 and len(set(proxy.keys)) == 1, proxy.statuses
        whys = ended(cli, ExitCode.OK)[0]
        assert whys and all(why.startswith("the gateway answered 503 ") for why in whys), whys
    assert jobs() - before == {job_id}


def test_other_client_errors_are_not_retried(gateway: Gateway) -> None:
    with proxy_to(gateway, lose=False) as proxy:
        cli = fdl(proxy.url, *TRAIN, api_key="not-the-key-0123456789")
        assert cli.popen.wait(60) == ExitCode.AUTH, cli.output()
        assert proxy.statuses == [401] and len(proxy.keys) == 1


def test_giving_up_after_a_try_that_may_have_reached_the_gateway_says_to_check_first(
    gateway: Gateway, jobs: Callable[[], set[str]]
) -> None:
    """Every answer lost: after the last try, exit 3 saying that a job may exist, and its key."""
    before = jobs()
    with proxy_to(gateway, lose_all=True) as proxy:
        whys, out = ended(fdl(proxy.url, *TRAIN), ExitCode.UNREACHABLE)
        assert len(proxy.keys) == 8 and len(set(proxy.keys)) == 1, proxy.keys
    assert len(whys) == 7 and all(why.startswith("the answer was lost (") for why in whys), whys
    error = f"Error: gave up submitting to the gateway at {proxy.url}: the answer was lost ("
    assert out.startswith(error), out
    assert f"{CHECK_FIRST} again (its Idempotency-Key was {proxy.keys[0]})\n" in out, out
    assert len(jobs() - before) == 1  # the first try's, replayed to the others


def test_ctrl_c_while_waiting_to_try_again_says_to_check_first(
    own_redis: RestartableRedis, gateway: Gateway
) -> None:
    with proxy_to(gateway, lose=False) as proxy:
        own_redis.stop()
        cli = fdl(proxy.url, *TRAIN)
        try:
            cli.wait_line("submitting: the gateway answered 503", 30)
            cli.stop()  # SIGINT, as Ctrl-C
        finally:
            cli.stop()
            own_redis.start()
    assert cli.popen.returncode == 130, cli.output()
    cli.pump.join(10)
    assert f"Stopped{CHECK_FIRST} again (its Idempotency-Key was {proxy.keys[0]}).\n" in (
        cli.output()
    )


# `fdl` that prints, as it exits, how many connections it tried to make to FDL_URL's port.
COUNTING_CONNECTS = """
import atexit, os, sys
port = int(os.environ["FDL_URL"].rsplit(":", 1)[1])
tried = []
def audit(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1][1] == port:
        tried.append(args[1])
sys.addaudithook(audit)
atexit.register(lambda: print(f"connects: {len(tried)}", file=sys.stderr))
from fdl.cli import app
app(prog_name="fdl")
"""


def test_a_connection_refused_at_the_first_try_is_not_retried() -> None:
    """Nothing was sent: no gateway listens there (said at once, as any command does)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    env |= {"FDL_URL": f"http://127.0.0.1:{free_port()}", "FDL_API_KEY": ADMIN_KEY}
    done = subprocess.run(
        [sys.executable, "-c", COUNTING_CONNECTS, *TRAIN],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == ExitCode.UNREACHABLE, done.stderr
    assert "cannot reach the gateway" in done.stderr and "submitting:" not in done.stderr
    assert done.stderr.endswith("connects: 1\n"), done.stderr
