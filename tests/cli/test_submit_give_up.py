"""`fdl train` gives up its submission within FDL_SUBMIT_TRIES tries and FDL_SUBMIT_RETRY_FOR_S
seconds (fdl/cli_retry.py; docs/training.md, "Submitting once"), and then says that a job may
exist, naming the Idempotency-Key that every try sent: after answers that never arrive, exit 3
(the one job the first try made stays the only one); after a gateway that answers 503 throughout
(its Redis stopped), exit 1 with the gateway's error. An invalid setting is a usage error before
anything is sent; a ``.env`` here sets them, unless it cannot be read.

A real gateway on a Redis of this module's own; between the CLI and the gateway, a TCP proxy
that forwards every request and loses the answers to ``POST /v1/jobs`` when told to
(tests/cli/lost_answer_proxy.py)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fdl.cli_client import ExitCode
from fdl.job_records import INDEX_KEY
from harness.cli import BackgroundCli
from harness.gateway import ADMIN_KEY, Gateway
from harness.procs import VENV_BIN
from harness.redis import RestartableRedis
from tests.cli.lost_answer_proxy import LostAnswerProxy

TRAIN = ["train", "mnist_logreg", "--epochs", "1", "--detach"]
# A dim line on stderr for each retry (fdl/cli_retry.py:_say_retry): why, the wait, try n of N.
RETRY_LINE = (
    r"submitting: (.+); sending it again under the same Idempotency-Key in ([\d.]+) s "
    r"\(try (\d+) of (\d+)\)\n"
)
CHECK_FIRST = (
    "; the submission may still have created a job: check `fdl jobs` before submitting again "
    "(its Idempotency-Key was {key})"
)


@pytest.fixture(scope="module")
def gateway(own_gateway: Gateway) -> Gateway:
    """The gateway on this module's own Redis (tests/cli/conftest.py)."""
    return own_gateway


@pytest.fixture
def proxy(gateway: Gateway) -> Iterator[LostAnswerProxy]:
    """A proxy that forwards every answer (``lose_all`` set by a test: none of a job's)."""
    proxy = LostAnswerProxy(gateway.url, lose=False)
    try:
        yield proxy
    finally:
        proxy.close()


def jobs(own_redis: RestartableRedis) -> set[str]:
    """The ids of the jobs in the store."""
    with redis.Redis.from_url(own_redis.url, decode_responses=True) as client:
        return set(client.zrange(INDEX_KEY, 0, -1))


def fdl(url: str, *args: str, **settings: str) -> BackgroundCli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    return BackgroundCli(list(args), env | {"FDL_URL": url, "FDL_API_KEY": ADMIN_KEY} | settings)


def ended(cli: BackgroundCli, code: int) -> tuple[list[tuple[str, str, int, int]], str]:
    """`fdl train`'s retry lines (why, the wait, try n, of N: tries 2, 3, … in order), and the
    rest of what it printed, once it exited with ``code``."""
    assert cli.popen.wait(120) == code, cli.output()
    cli.pump.join(10)
    out, retries = cli.output(), list[tuple[str, str, int, int]]()
    while found := re.match(RETRY_LINE, out):
        why, wait, n, of = found.groups()
        assert int(n) == len(retries) + 2, out
        retries.append((why, wait, int(n), int(of)))
        out = out[found.end() :]
    return retries, out


def test_every_answer_lost_gives_up_after_fdl_submit_tries_leaving_one_job(
    own_redis: RestartableRedis, proxy: LostAnswerProxy
) -> None:
    """FDL_SUBMIT_TRIES=3: three tries under one key, every answer lost; exit 3 saying that a
    job may exist and its key. The first try's job is the only one: the others replayed it."""
    before = jobs(own_redis)
    proxy.lose = proxy.lose_all = True
    retries, out = ended(fdl(proxy.url, *TRAIN, FDL_SUBMIT_TRIES="3"), ExitCode.UNREACHABLE)
    assert [(n, of) for _, _, n, of in retries] == [(2, 3), (3, 3)], retries
    assert all(why.startswith("the answer was lost (") for why, *_ in retries), retries
    [key, *others] = proxy.keys
    assert re.fullmatch("[0-9a-f]{32}", key) and others == [key, key], proxy.keys
    error = f"Error: gave up submitting to the gateway at {proxy.url}: the answer was lost ("
    assert out.startswith(error) and out.endswith(CHECK_FIRST.format(key=key) + "\n"), out
    assert len(jobs(own_redis) - before) == 1


def test_a_gateway_answering_503_throughout_gives_up_within_fdl_submit_retry_for_s(
    own_redis: RestartableRedis, proxy: LostAnswerProxy
) -> None:
    """Its Redis stopped, the gateway answers 503 with Retry-After: 2. FDL_SUBMIT_RETRY_FOR_S=3
    (tries left: the default 8): the second try is the last, for a third would start 4 s after
    the first failure; exit 1 with the gateway's error, saying that a job may exist and its
    key."""
    before = jobs(own_redis)
    own_redis.stop()
    try:
        started = time.monotonic()
        cli = fdl(proxy.url, *TRAIN, FDL_SUBMIT_RETRY_FOR_S="3")
        retries, out = ended(cli, ExitCode.API_ERROR)
        took = time.monotonic() - started
    finally:
        own_redis.start()
    assert retries == [("the gateway answered 503 job_store_unavailable", "2", 2, 8)], out
    assert proxy.statuses == [503, 503] and len(set(proxy.keys)) == 1, proxy.statuses
    hint = re.escape(CHECK_FIRST.format(key=proxy.keys[0]))
    assert re.fullmatch(rf"Error: .+ \(503 job_store_unavailable\){hint}\n", out), out
    assert took < 12, took  # the default 45 s would have made 8 tries, 2 s apart
    assert jobs(own_redis) == before  # the store was away: nothing was written


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("FDL_SUBMIT_TRIES", "0", "greater than or equal to 1"),
        ("FDL_SUBMIT_TRIES", "8 tries", "a valid integer"),
        ("FDL_SUBMIT_RETRY_FOR_S", "45000", "less than or equal to 600"),
        ("FDL_SUBMIT_RETRY_FOR_S", "nan", "a finite number"),
    ],
)
def test_an_invalid_retry_setting_is_a_usage_error_before_anything_is_sent(
    proxy: LostAnswerProxy, name: str, value: str, why: str
) -> None:
    cli = fdl(proxy.url, *TRAIN, **{name: value})
    retries, out = ended(cli, ExitCode.USAGE)
    assert not retries and out.startswith(f"Error: invalid setting: {name}: "), out
    assert why in out and value not in out.split(":", 2)[2], out  # never quoting the value
    assert not proxy.keys, proxy.keys  # nothing was sent


@pytest.mark.parametrize(
    ("dot_env", "environ", "tries"),
    [
        (b"FDL_SUBMIT_TRIES=2\n", {}, 2),
        (b"FDL_SUBMIT_TRIES=2\nFOO=\xff\xfe not UTF-8\n", {"FDL_SUBMIT_TRIES": "3"}, 3),
    ],
    ids=["read", "not-utf-8"],
)
def test_a_dot_env_here_sets_them_unless_it_cannot_be_read(
    proxy: LostAnswerProxy, tmp_path: Path, dot_env: bytes, environ: dict[str, str], tries: int
) -> None:
    """As `fdl up` reads its settings; a .env that cannot be read stops nothing (docs/ui.md):
    the environment's values apply. Every answer lost, so the tries are counted."""
    (tmp_path / ".env").write_bytes(dot_env)
    proxy.lose = proxy.lose_all = True
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    done = subprocess.run(
        [str(VENV_BIN / "fdl"), *TRAIN],
        env=env | {"FDL_URL": proxy.url, "FDL_API_KEY": ADMIN_KEY} | environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == ExitCode.UNREACHABLE, done.stderr
    assert len(proxy.keys) == tries and len(set(proxy.keys)) == 1, done.stderr
    assert f"(try {tries} of {tries})" in done.stderr, done.stderr
