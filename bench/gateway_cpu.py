"""The gateway's CPU per classify request, for gateways from several source trees, in one run.

Each ``--tree NAME=PATH`` (a git worktree of another commit, e.g. ``git worktree add
../old <commit> --detach``) runs its own gateway (``python -m api`` from that tree, this venv's
interpreter) against the same Redis and model server; the same aiohttp client sends the same
JSON-b64 digit to each at concurrency 16 for ``--seconds``, trees in turn and their order
reversed every other round (the machine's speed drifts within minutes); before each, ``--requests``
calls one at a time. Printed: requests/s and CPU ms per request of each gateway and of the model
server, per round and as medians, with each tree's CPU as a ratio of the first's, and the p50
latency at concurrency 1 with its ratio. ``--env NAME:KEY=VALUE`` sets a setting for one tree
only (``--tree fast=. --tree slow=. --env slow:FDL_CLASSIFY_FAST_PATH=false``).

``--profile DIR`` then records each gateway with py-spy (not a project dependency: ``pip install
py-spy``) under the same load, writes ``DIR/NAME.txt`` (collapsed stacks) and prints the functions
with the largest share of the gateway's samples, on-CPU (self) and including callees.

    python bench/gateway_cpu.py --tree old=../old --tree new=. [--seconds 3] [--rounds 5]
                                [--requests 300] [--body json|png] [--env new:FDL_X=1]
                                [--profile DIR]
"""

# ruff: noqa: E402 - grpc must be imported after tune_grpc()
from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from fdl.grpc_tuning import tune_grpc

tune_grpc()

import aiohttp
import psutil
from gateway_latency import cpu_s, digit_png, throughput
from gateway_stack import REPO_ROOT, running_stack, start_gateway
from load_loops import sequential, tree_cpu_s
from machine import python_speed_ms, speed_line
from pyspy_profile import difference, summarise

MODEL = "digits"
CONCURRENCY = 16


def classify_call(session: aiohttp.ClientSession, url: str, body: bytes, kind: str):
    endpoint = f"{url}/v1/models/{MODEL}:classify"
    headers = {"content-type": kind}

    async def call() -> None:
        async with session.post(endpoint, data=body, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{endpoint}: {response.status}")

    return call


async def measure(
    gateways: dict[str, tuple[psutil.Process, str]], server: psutil.Process,
    body: bytes, kind: str, args: argparse.Namespace,
) -> None:  # fmt: skip
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=32), timeout=aiohttp.ClientTimeout(total=30)
    )
    calls = {name: classify_call(session, url, body, kind) for name, (_, url) in gateways.items()}
    for call in calls.values():  # warm-up: metadata caches, connections, first imports
        for _ in range(50):
            await call()
    rows: dict[str, list[tuple[float, ...]]] = {name: [] for name in calls}
    names = list(calls)
    for number in range(args.rounds):
        order = names if number % 2 == 0 else names[::-1]
        for name in order:
            process = gateways[name][0]
            # Concurrency 1 first, outside the CPU counts: they are per request at concurrency 16.
            latencies = await sequential(calls[name], args.requests)
            before, server_before = tree_cpu_s(process), cpu_s(server)
            loop_before, faults_before = loop_cpu_s(process), minor_faults(process.pid)
            rate, done = await throughput(calls[name], CONCURRENCY, args.seconds)
            gateway_ms = (tree_cpu_s(process) - before) * 1000 / done
            loop_ms = (loop_cpu_s(process) - loop_before) * 1000 / done
            server_ms = (cpu_s(server) - server_before) * 1000 / done
            faults = (minor_faults(process.pid) - faults_before) / done
            p50 = statistics.median(latencies)
            rows[name].append((rate, gateway_ms, loop_ms, server_ms, faults, p50))
        cells = "  ".join(f"{n} {rows[n][-1][1]:.3f} ms {rows[n][-1][0]:.0f}/s" for n in names)
        print(f"round {number + 1}: {cells} (load {psutil.getloadavg()[0]:.2f})", flush=True)
    if args.rounds:
        report(rows, args.rounds)
    if args.profile:
        profiles = {
            name: await profile(name, process.pid, calls[name], args)
            for name, (process, _) in gateways.items()
        }
        for name in names[1:]:
            difference(names[0], profiles[names[0]], name, profiles[name], args.top)
    await session.close()


def loop_cpu_s(process: psutil.Process) -> float:
    """CPU seconds of the main thread (the event loop); the rest is gRPC's poller thread and
    the worker threads."""
    main = next(t for t in process.threads() if t.id == process.pid)
    return main.user_time + main.system_time


def minor_faults(pid: int) -> int:
    """The process's minor page faults so far (/proc/PID/stat, field 10)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[7])


def report(rows: dict[str, list[tuple[float, ...]]], rounds: int) -> None:
    names = list(rows)
    first = statistics.median(r[1] for r in rows[names[0]])
    first_p50 = statistics.median(r[5] for r in rows[names[0]])
    print(f"\nmedians of {rounds} rounds at concurrency {CONCURRENCY}; CPU ms per request; "
          "p50 ms at concurrency 1")  # fmt: skip
    print(f"{'gateway':<14} {'req/s':>7} {'gateway CPU':>11} {'ratio':>6} {'event loop':>10} "
          f"{'server CPU':>10} {'page faults/req':>15} {'c1 p50':>7} {'ratio':>6}")  # fmt: skip
    for name, values in rows.items():
        rate, cpu, loop, server_ms, faults, p50 = (
            statistics.median(v[i] for v in values) for i in range(6)
        )
        print(f"{name:<14} {rate:>7.1f} {cpu:>11.3f} {cpu / first:>6.2f} {loop:>10.3f} "
              f"{server_ms:>10.3f} {faults:>15.1f} "
              f"{p50:>7.3f} {p50 / first_p50:>6.2f}")  # fmt: skip


RATE_HZ = 250  # py-spy samples per second


async def profile(name: str, pid: int, call, args: argparse.Namespace) -> Counter[str]:
    """py-spy on the gateway while the client keeps it at concurrency 16; returns the µs of CPU
    per request spent in each function, callees included."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    out = Path(args.profile) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    seconds = args.profile_seconds
    recorder = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(RATE_HZ),
        "--format", "raw", "--output", str(out), "--nonblocking", "--full-filenames",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    process = psutil.Process(pid)
    before = tree_cpu_s(process)
    _, done = await throughput(call, CONCURRENCY, seconds + 1)
    cpu_us = (tree_cpu_s(process) - before) * 1e6 / done
    await recorder.wait()
    return summarise(name, out, args.top, cpu_us)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH, repeated")
    parser.add_argument("--env", action="append", default=[], help="NAME:KEY=VALUE")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--requests", type=int, default=300, help="at concurrency 1, per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--body", choices=("json", "png"), default="json")
    parser.add_argument("--profile", help="a directory: py-spy each gateway after the rounds")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    trees = {n: Path(p).resolve() for n, _, p in (t.partition("=") for t in args.tree)}
    envs: dict[str, dict[str, str]] = {name: {} for name in trees}
    for item in args.env:
        name, _, setting = item.partition(":")
        key, _, value = setting.partition("=")
        envs[name][key] = value
    from harness.models import build_test_model

    png, _ = digit_png()
    body, kind = (
        (json.dumps({"instances": [{"b64": base64.b64encode(png).decode()}]}).encode(),
         "application/json")
        if args.body == "json" else (png, "image/png")
    )  # fmt: skip
    before = python_speed_ms()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        work = Path(tmp)
        build_test_model(work / "models" / MODEL / "1", (28, 28, 1), 10, model_name=MODEL)
        stack = started.enter_context(running_stack(work / "models", work, {MODEL: 1}))
        grpc_port = int(stack.grpc_target.rsplit(":", 1)[1])
        gateways = {}
        for name, tree in trees.items():
            process, url, _, _ = start_gateway(
                stack.logs, stack.redis_url, grpc_port, stack.model_dir, envs[name],
                name=f"gateway-{name}", tree=tree,
            )  # fmt: skip
            started.callback(process.stop)
            gateways[name] = (psutil.Process(process.pid), url)
        print(f"trees: {', '.join(f'{n}={p}' for n, p in trees.items())}; body {kind}")
        gc.freeze()  # the model build's TensorFlow objects: out of the client's GCs
        server = psutil.Process(stack.server.pid)
        asyncio.run(measure(gateways, server, body, kind, args))
    print(speed_line(before, python_speed_ms()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    raise SystemExit(main())
