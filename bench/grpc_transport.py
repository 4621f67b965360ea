"""gRPC's transport setting (``GRPC_EXPERIMENTS``) on a no-op call, grpcio's default vs ours.

For each setting, a ``grpc.aio`` server with only the health service runs in its own process, and
a client in another process (a sync stub, then a ``grpc.aio`` stub) calls ``Check`` back to back.
The two settings alternate for ``--rounds`` rounds; the table gives the medians over the rounds of
p50 latency and of client and server CPU time per call, and the ratios ours / default. The
setting reaches both processes, as it does for the model server and the gateway (fdl/grpc_tuning).

    python bench/grpc_transport.py [--rounds 5] [--calls 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fdl.grpc_tuning import DEFAULT_EXPERIMENTS  # noqa: E402

SETTINGS = {"grpcio default": "", "ours": DEFAULT_EXPERIMENTS}

SERVER = """
import asyncio, sys
import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""

CLIENT = """
import asyncio, json, resource, statistics, sys, time
import grpc, psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

port, server_pid, calls = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
server = psutil.Process(server_pid)
request = health_pb2.HealthCheckRequest()

def cpu_now():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    times = server.cpu_times()
    return usage.ru_utime + usage.ru_stime, times.user + times.system

def summary(latencies, before, after):
    return {"p50": statistics.median(latencies) * 1e3,
            "client": (after[0] - before[0]) / calls * 1e3,
            "server": (after[1] - before[1]) / calls * 1e3}

channel = grpc.insecure_channel(f"127.0.0.1:{port}")
stub = health_pb2_grpc.HealthStub(channel)
for _ in range(300):
    stub.Check(request)
latencies, before = [], cpu_now()
for _ in range(calls):
    start = time.perf_counter()
    stub.Check(request)
    latencies.append(time.perf_counter() - start)
result = {"sync stub": summary(latencies, before, cpu_now())}
channel.close()

async def aio_calls():
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            await stub.Check(request)
        latencies, before = [], cpu_now()
        for _ in range(calls):
            start = time.perf_counter()
            await stub.Check(request)
            latencies.append(time.perf_counter() - start)
        return summary(latencies, before, cpu_now())

result["grpc.aio stub"] = asyncio.run(aio_calls())
print(json.dumps(result))
"""


def one_round(experiments: str, calls: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "GRPC_EXPERIMENTS": experiments}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())  # printed once the server listens
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, str(port), str(server.pid), str(calls)],
            env=env, capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip
        return json.loads(client.stdout)
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    import grpc

    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, experiments in SETTINGS.items():
            runs[name].append(one_round(experiments, args.calls))
    print(
        f"no-op gRPC call (health Check), {args.calls} calls per client, medians of "
        f"{args.rounds} alternating rounds"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, grpcio {grpc.__version__}, load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'client':<14} {'GRPC_EXPERIMENTS':<22} {'p50 ms':>7} {'client CPU ms':>14} "
          f"{'server CPU ms':>14}")  # fmt: skip
    for client in ("sync stub", "grpc.aio stub"):
        medians = {}
        for name, experiments in SETTINGS.items():
            medians[name] = {
                key: statistics.median(run[client][key] for run in runs[name])
                for key in ("p50", "client", "server")
            }
            row = medians[name]
            print(f"{client:<14} {experiments or '(empty)':<22} {row['p50']:>7.3f} "
                  f"{row['client']:>14.3f} {row['server']:>14.3f}")  # fmt: skip
        ours, default = medians["ours"], medians["grpcio default"]
        print(f"{client:<14} {'ours / default':<22} {ours['p50'] / default['p50']:>7.2f} "
              f"{ours['client'] / default['client']:>14.2f} "
              f"{ours['server'] / default['server']:>14.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
