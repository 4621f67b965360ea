"""Gateway classify vs direct gRPC Predict to the same model server, in the same run.

Concurrency 1: latency of one 28x28 PNG through the gateway (HTTP multipart, decode, digit
preprocessing, Predict, postprocess) vs one Predict of the already-decoded [1,28,28,1] tensor
straight to the model server. Concurrency 16: requests per second of both, and the CPU time per
request of each process (client, gateway, model server): on a small machine they share cores.
Goals (issue 5): p50 difference <= 1 ms at concurrency 1; gateway >= 0.7x direct req/s at 16.

At concurrency 1 the bench also shows where the difference goes: the p50 of ``GET /healthz``
through the same HTTP client, server and middleware (the floor of any HTTP call to the gateway),
and the gateway's own mean time per classify request from its metrics (the request as its
middleware times it, and each stage), so the difference reads as HTTP floor + stages + the rest.

The HTTP client is aiohttp with the multipart body encoded once (the bytes httpx would send);
``--client httpx`` measures with httpx.AsyncClient as before (about 1 ms more per request).

    python bench/gateway_latency.py [--requests 300] [--seconds 3] [--rounds 3]
                                    [--client aiohttp|httpx]

The gateway runs with the caller's FDL_ settings: FDL_PREDICT_MAX_IN_FLIGHT=0 measures it without
merging concurrent requests into shared Predicts.
"""

# ruff: noqa: E402 - grpc must be imported after tune_grpc()
from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Awaitable, Callable

from fdl.grpc_tuning import tune_grpc

tune_grpc()  # before grpc loads: the direct client runs as the gateway's does

import grpc
import httpx
import numpy as np
import psutil
from gateway_calls import Call, grpc_call
from gateway_stack import DIGITS, BenchStack, digits_stack
from load_loops import cpu_s, digit_png, own_cpu_s, pct, sequential, throughput
from machine import python_speed_ms, speed_line

from harness.prometheus import scrape, total

STAGES = ("decode", "preprocess", "predict", "postprocess")


def predicts_served(url: str) -> tuple[float, float]:
    """(Predict calls, classify requests they served) so far, from the gateway's metrics."""
    text = scrape(f"{url}/metrics")
    calls = total(text, "fdl_gateway_predict_call_requests_count")
    return calls, total(text, "fdl_gateway_predict_call_requests_sum")


def http_client(
    kind: str, url: str, png: bytes | None
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """A classify call of ``png`` (without one: ``GET /healthz``) and the client's close, for
    ``kind`` aiohttp or httpx."""
    method, endpoint = (
        ("POST", f"{url}/v1/models/{DIGITS}:classify") if png else ("GET", f"{url}/healthz")
    )
    files = [("file", ("d.png", png, "image/png"))] if png else None
    if kind == "httpx":
        client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32))

        async def call_httpx() -> None:
            response = await client.request(method, endpoint, files=files)
            response.raise_for_status()

        return call_httpx, client.aclose

    import aiohttp  # a bench dependency (the "dev" extra)

    encoded = httpx.Request(method, endpoint, files=files)
    body = encoded.read() or None
    headers = {"content-type": encoded.headers["content-type"]} if png else {}
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=32), timeout=aiohttp.ClientTimeout(total=30)
    )

    async def call_aiohttp() -> None:
        async with session.request(method, endpoint, data=body, headers=headers) as response:
            response.raise_for_status()
            await response.read()

    return call_aiohttp, session.close


def classify_timings(url: str) -> np.ndarray:
    """Seconds so far in the gateway's classify requests (as its middleware times them) and in
    each stage, then the number of those requests, from the gateway's metrics."""
    text = scrape(f"{url}/metrics")
    route = {"method": "POST", "route": "/v1/models/{model}:classify"}
    return np.array(
        [
            total(text, "fdl_gateway_request_seconds_sum", **route),
            *(
                total(text, "fdl_gateway_stage_seconds_sum", model=DIGITS, stage=stage)
                for stage in STAGES
            ),
            total(text, "fdl_gateway_request_seconds_count", **route),
        ]
    )


async def latency_round(calls: dict[str, Call], floor: Call, url: str, requests: int) -> dict:
    """Concurrency 1: prints each client's latencies and the gateway's own times per request;
    returns the p50 difference, the HTTP floor's p50 and the gateway's mean times (ms)."""
    print(f"  concurrency 1, {requests} requests each (ms)")
    p50s = []
    before = classify_timings(url)  # only the gateway's classify calls move these
    for name, call in {**calls, "gateway /healthz": floor}.items():
        latencies = await sequential(call, requests)
        p50s.append(pct(latencies, 50))
        print(
            f"    {name:16s} p50 {pct(latencies, 50):6.2f}  p90 {pct(latencies, 90):6.2f}  "
            f"p99 {pct(latencies, 99):6.2f}  mean {statistics.fmean(latencies):6.2f}"
        )
    spent = classify_timings(url) - before
    inside = spent[:-1] * 1000 / spent[-1]
    request, stages = inside[0], dict(zip(STAGES, inside[1:], strict=True))
    rest = request - sum(stages.values())
    print(
        f"    inside the gateway, mean per classify: {request:.2f} (middleware to response), of "
        f"which {', '.join(f'{k} {v:.2f}' for k, v in stages.items())}, the rest (routing, "
        f"auth, multipart, JSON) {rest:.2f}"
    )
    return {
        "difference": p50s[1] - p50s[0],
        "http floor": p50s[2],
        "decode + preprocess": stages["decode"] + stages["preprocess"],
        "predict - direct p50": stages["predict"] - p50s[0],
        "postprocess + rest": rest + stages["postprocess"],
    }


async def throughput_round(
    calls: dict[str, Call], processes: dict[str, psutil.Process], url: str, seconds: float
) -> float:
    """Concurrency 16: prints req/s and CPU per request, returns gateway / direct req/s."""
    print(f"  concurrency 16, {seconds:.0f} s each (requests/s; CPU ms per request)")
    rates = []
    for name, call in calls.items():
        before = {k: cpu_s(p) for k, p in processes.items()}
        client_before = own_cpu_s()
        predicts_before = predicts_served(url)
        rate, done = await throughput(call, 16, seconds)
        rates.append(rate)
        spent = {k: (cpu_s(p) - before[k]) * 1000 / done for k, p in processes.items()}
        client_ms = (own_cpu_s() - client_before) * 1000 / done
        print(
            f"    {name:16s} {rate:8.1f} req/s   CPU: client {client_ms:.2f}  "
            f"gateway {spent['gateway']:.2f}  model server {spent['server']:.2f}"
        )
        calls_made, served = np.subtract(predicts_served(url), predicts_before)
        if calls_made:
            print(f"    {'':16s} gateway requests per Predict: {served / calls_made:.1f}")
    return rates[1] / rates[0]


async def measure(
    stack: BenchStack, client: str, requests: int, seconds: float, rounds: int
) -> None:
    png, tensor = digit_png()
    channel = grpc.aio.insecure_channel(stack.grpc_target)
    gateway, close = http_client(client, stack.url, png)
    floor, close_floor = http_client(client, stack.url, None)
    calls = {"direct gRPC": grpc_call(channel, DIGITS, tensor), f"gateway {client}": gateway}
    processes = {
        "gateway": psutil.Process(stack.gateway.pid),
        "server": psutil.Process(stack.server.pid),
    }
    parts, ratios = [], []
    for number in range(1, rounds + 1):
        # Rounds alternate direct and gateway: the machine's speed drifts within minutes.
        print(f"round {number} of {rounds}")
        parts.append(await latency_round(calls, floor, stack.url, requests))
        ratios.append(await throughput_round(calls, processes, stack.url, seconds))
    listed = ", ".join(f"{p['difference']:+.2f}" for p in parts)
    median = statistics.median(p["difference"] for p in parts)
    print(f"p50 difference at concurrency 1 (goal <= 1 ms): {listed} ms; median {median:+.2f}")
    medians = {
        key: statistics.median(p[key] for p in parts) for key in parts[0] if key != "difference"
    }
    print(
        "  medians of its parts: "
        + ", ".join(f"{key} {value:.2f}" for key, value in medians.items())
        + " ms (HTTP floor: p50 of GET /healthz; the others: the gateway's own means)"
    )
    listed = ", ".join(f"{r:.2f}" for r in ratios)
    median = statistics.median(ratios)
    print(f"gateway / direct at concurrency 16 (goal >= 0.7x): {listed}; median {median:.2f}x")
    await close()
    await close_floor()
    await channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    args = parser.parse_args()
    before = python_speed_ms()  # the machine's speed before and after: it drifts
    with digits_stack() as stack:
        print(
            f"gateway start-up: spawn to /healthz 200 {stack.gateway_start_s:.2f} s, "
            f"to /readyz 200 {stack.gateway_ready_s:.2f} s (load average "
            f"{psutil.getloadavg()[0]:.2f})"
        )
        asyncio.run(measure(stack, args.client, args.requests, args.seconds, args.rounds))
        rss = psutil.Process(stack.gateway.pid).memory_info().rss / 2**20
        print(f"gateway RSS after the run: {rss:.0f} MB (goal <= 150 MB)")
    print(speed_line(before, python_speed_ms()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
