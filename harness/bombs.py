"""Decompression bombs and the load of them that the gateway must survive (tests and bench/)."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
from PIL import Image


def transparent_png(width: int, height: int) -> bytes:
    """A fully transparent PNG: tiny on the wire, width x height x 4 bytes decoded."""
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (255, 255, 255, 0)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


class PeakRss:
    """The highest RSS of a process, sampled every few milliseconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bomb_load(
    url: str, bomb: bytes, headers: dict[str, str], concurrency: int = 32, rounds: int = 2
) -> list[int]:
    """``concurrency`` clients, each sending ``rounds`` requests: single bombs to both models
    and batches of four (multipart and JSON alike go through the same decoding)."""

    def client(index: int) -> list[int]:
        statuses = []
        with httpx.Client(timeout=120) as http:
            for _ in range(rounds):
                model = ("digits", "photos")[index % 2]
                count = 4 if index % 4 >= 2 else 1
                files = [("file", (f"b{i}.png", bomb, "image/png")) for i in range(count)]
                response = http.post(
                    f"{url}/v1/models/{model}:classify", files=files, headers=headers
                )
                statuses.append(response.status_code)
        return statuses

    with ThreadPoolExecutor(concurrency) as pool:
        return [s for result in pool.map(client, range(concurrency)) for s in result]


def timed_requests(
    url: str, body: bytes, headers: dict[str, str], stop: threading.Event
) -> list[float]:
    """Ordinary traffic: one small digit at a time until ``stop``; latencies in seconds."""
    latencies = []
    with httpx.Client(timeout=60) as http:
        while not stop.is_set():
            start = time.perf_counter()
            response = http.post(
                f"{url}/v1/models/digits:classify",
                files={"file": ("d.png", body, "image/png")},
                headers=headers,
            )
            latencies.append(time.perf_counter() - start)
            assert response.status_code == 200, response.text
    return latencies
