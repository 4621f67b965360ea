"""The gateway's memory under decompression bombs, beside ordinary traffic's latency.

32 clients send PNG bombs at the gateway's pixel limit (4000x4000, fully transparent: about
70 KB on the wire, 64 MB decoded as RGBA), singly and in batches of four, to a digit and a photo
model, while one client sends ordinary 28x28 digits one at a time. Prints the gateway's RSS
before, at its peak and after, the bombs' answers (200 or 503 from the decode budget), and the
ordinary requests' p50 without and with the bombs. Goals (issue 15): peak <= 300 MB, after
< 150 MB, p50 at most doubled.

    python bench/gateway_bombs.py [--seconds 5] [--clients 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
from gateway_stack import running_stack

from harness.bombs import PeakRss, bomb_load, timed_requests, transparent_png

MB = 1024 * 1024


def ordinary_p50(url: str, digit: bytes, seconds: float) -> tuple[float, int]:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    latencies = timed_requests(url, digit, {}, stop)
    return statistics.median(latencies) * 1000, len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from harness.models import build_test_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_test_model(work / "models" / "digits" / "1", (28, 28, 1), 10, model_name="digits")
        build_test_model(work / "models" / "photos" / "1", (32, 32, 3), 3, model_name="photos")
        with running_stack(work / "models", work, {"digits": 1, "photos": 1}) as stack:
            process = psutil.Process(stack.gateway.pid)
            digit = transparent_png(28, 28)
            bomb = transparent_png(4000, 4000)
            quiet_p50, quiet_n = ordinary_p50(stack.url, digit, args.seconds)
            before = process.memory_info().rss
            stop = threading.Event()
            loaded: list[float] = []
            with PeakRss(stack.gateway.pid) as peak:
                worker = threading.Thread(
                    target=lambda: loaded.extend(timed_requests(stack.url, digit, {}, stop))
                )
                worker.start()
                started = time.perf_counter()
                statuses = bomb_load(stack.url, bomb, {}, args.clients, args.rounds)
                bombs_s = time.perf_counter() - started
                stop.set()
                worker.join()
            deadline = time.monotonic() + 30
            while process.memory_info().rss >= 150 * MB and time.monotonic() < deadline:
                time.sleep(0.2)  # polling the RSS, with a deadline
            after = process.memory_info().rss
    answers = ", ".join(f"{statuses.count(s)} x {s}" for s in sorted(set(statuses)))
    print(
        f"bombs: {len(statuses)} requests from {args.clients} clients in {bombs_s:.1f} s: {answers}"
    )
    print(
        f"gateway RSS: before {before / MB:.0f} MB, peak {peak.peak / MB:.0f} MB, "
        f"after {after / MB:.0f} MB"
    )
    print(
        f"ordinary 28x28 digit p50: {quiet_p50:.1f} ms alone ({quiet_n} requests), "
        f"{statistics.median(loaded) * 1000:.1f} ms under the bombs ({len(loaded)} requests)"
    )


if __name__ == "__main__":
    main()
