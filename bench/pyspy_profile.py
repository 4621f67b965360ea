"""Reading a gateway's py-spy profile (``py-spy record --format raw``): where its CPU goes.

Samples are apportioned to the CPU the process measurably spent per request, so the numbers are
µs of CPU per request whatever the machine's load (py-spy samples any thread it does not see
idle, also while it waits for a core). Used by ``bench/gateway_cpu.py --profile``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

# (category, markers): a sample belongs to the category of its innermost frame whose name contains
# one of the markers (generic helpers such as starlette/datastructures.py are no marker: their
# caller decides).
_ROUTING = (
    "fastapi/routing.py", "fastapi/applications.py", "fastapi/_body_limit.py", "fastapi/telemetry/",
    "fastapi/middleware/", "starlette/routing.py", "starlette/applications.py",
    "starlette/middleware/", "starlette/_exception_handler",
)  # fmt: skip
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "access log, metrics",
        ("logging/", "api/logs.py", "api/access_log.py", "prometheus_client/", "api/metrics.py"),
    ),
    (
        "decode, preprocess (Pillow, NumPy)",
        ("api/image_open.py", "api/image_decode.py", "api/preprocess.py", "PIL/"),
    ),
    ("gRPC Predict (client side)", ("grpc/", "api/serving_client.py", "api/tensors.py")),
    (
        "classify route: coalescer, stages, postprocess",
        ("api/coalesce.py", "api/classification.py", "api/routers/"),
    ),
    ("body read, JSON, base64", ("api/bodies.py", "starlette/requests.py")),
    ("response (JSON encode, headers)", ("starlette/responses.py",)),
    ("auth, rate limit", ("api/auth.py", "api/ratelimit.py")),
    ("FastAPI dependencies, parameters", ("fastapi/dependencies/", "pydantic", "fastapi/_compat")),
    (
        "gateway middleware, request id",
        ("api/middleware.py", "api/middleware_checks.py", "api/deps.py"),
    ),
    ("FastAPI/Starlette routing, middleware", _ROUTING),
    ("HTTP guard", ("api/http_guard.py", "fdl/http_guard.py")),
    ("uvicorn HTTP protocol", ("uvicorn/",)),
    ("gRPC poller thread", ("Thread.run (threading.py)",)),
    ("event loop (uvloop, C)", ("Runner.run (asyncio/runners.py)",)),
]


def short(frame: str) -> str:
    """``function (path/to/file.py:line)`` -> ``function (package/file.py)``: lines merged."""
    function, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(where).parts
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    else:  # the project's own files: package/module.py
        parts = parts[-3:] if len(parts) > 2 and parts[-2] == "routers" else parts[-2:]
    if parts and parts[0].startswith("python3"):  # the standard library: lib/python3.X/
        parts = parts[1:]
    return f"{function} ({'/'.join(parts)})"


def category(frames: list[str]) -> str:
    """The category of a sample's stack (frames outermost first)."""
    for frame in reversed(frames):
        for name, markers in CATEGORIES:
            if any(marker in frame for marker in markers):
                return name
    return "other"


def summarise(name: str, path: Path, top: int, cpu_us: float) -> Counter[str]:
    """Prints the categories and the functions with the most samples, self and inclusive, as %
    of the samples and as µs of ``cpu_us`` (CPU per request); returns µs per function."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        kinds[category(frames)] += count
        for frame in set(frames):
            inclusive[frame] += count
    scale = cpu_us / total
    print(f"\npy-spy, gateway {name}: {total} samples over {cpu_us:.0f} µs of CPU per request "
          f"({path})")  # fmt: skip
    for title, counter, shown in (
        ("by category", kinds, len(kinds)),
        (f"top {top} self", own, top),
        (f"top {top} inclusive", inclusive, top),
    ):
        print(f"  {title} (% of samples, µs per request):")
        for frame, count in counter.most_common(shown):
            print(f"    {100 * count / total:5.1f}% {count * scale:6.1f}  {frame}")
    return Counter({frame: count * scale for frame, count in inclusive.items()})


def difference(base: str, before: Counter[str], name: str, after: Counter[str], top: int) -> None:
    """The functions whose time per request (callees included) grew or shrank the most."""
    change = {f: after.get(f, 0.0) - before.get(f, 0.0) for f in {*before, *after}}
    print(f"\npy-spy, {name} - {base}, µs of CPU per request, callees included:")
    for frame, delta in sorted(change.items(), key=lambda item: -abs(item[1]))[:top]:
        was, now = before.get(frame, 0.0), after.get(frame, 0.0)
        print(f"    {delta:+6.1f}  ({was:6.1f} -> {now:6.1f})  {frame}")
