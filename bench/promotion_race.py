"""Promotions from two gateway replicas on one model repository, while a worker keeps publishing.

``python bench/promotion_race.py [--rounds 100]`` starts Redis, a model server, two gateways on one
model folder and a publishing loop, then runs rounds in which gateway A moves label ``alpha`` and
gateway B moves label ``beta`` of the same model at the same moment. After each round the labels
in ``labels.json`` and ``models.config`` must be what both gateways acknowledged (200). Prints the
acknowledged, lost and failed counts and the slowest promotion.

``python bench/promotion_race.py publish ...`` is the publishing loop (its own process, as a
worker is): it copies a template version in as the next version, again and again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from google.protobuf import text_format  # noqa: E402

from fdl import contract  # noqa: E402
from fdl.repository import CONFIG_FILE, Repository  # noqa: E402
from fdl.repository_reads import read_labels  # noqa: E402
from fdl.wire.tfs_pb2 import ModelServerConfig  # noqa: E402

MODEL = "race"
LABELS = ("alpha", "beta")
TEMPLATE_VERSIONS = (1, 2, 3)


@dataclass
class RaceResult:
    acknowledged: int = 0
    lost: int = 0
    failed: dict[int, int] = field(default_factory=dict)  # status -> count
    slowest_s: float = 0.0
    lost_examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"promotions acknowledged: {self.acknowledged}  lost: {self.lost}  "
            f"failed: {self.failed or 0}  slowest: {self.slowest_s:.2f}s"
        )


def _promote(
    client: httpx.Client, url: str, key: str, label: str, version: int
) -> tuple[int, float]:
    started = time.perf_counter()
    response = client.post(
        f"{url}/v1/models/{MODEL}/labels/{label}",
        json={"version": version},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    return response.status_code, time.perf_counter() - started


def _config_labels(model_dir: Path) -> dict[str, int]:
    """``version_labels`` of the race model in ``models.config``, parsed as the server reads it."""
    config = text_format.Parse((model_dir / CONFIG_FILE).read_text(), ModelServerConfig())
    for model in config.model_config_list.config:
        if model.name == MODEL:
            return dict(model.version_labels)
    return {}


def race(
    urls: tuple[str, str], key: str, model_dir: Path, rounds: int, stop_early: bool = False
) -> RaceResult:
    """``rounds`` rounds of two simultaneous promotions, one per gateway and label
    (``stop_early``: end after the first round that lost or failed one)."""
    result = RaceResult()
    # One client (one kept-alive connection) per label: a new one per call cost ~34 ms.
    with ThreadPoolExecutor(2) as pool, ExitStack() as stack:
        clients = {label: stack.enter_context(httpx.Client()) for label in LABELS}
        for round_ in range(rounds):
            wanted = {
                label: TEMPLATE_VERSIONS[(round_ + i) % len(TEMPLATE_VERSIONS)]
                for i, label in enumerate(LABELS)
            }
            futures = {
                label: pool.submit(_promote, clients[label], url, key, label, wanted[label])
                for url, label in zip(urls, LABELS, strict=True)
            }
            outcomes = {label: future.result() for label, future in futures.items()}
            labels_json = read_labels(model_dir).get(MODEL, {})
            config = _config_labels(model_dir)
            for label, (status, elapsed) in outcomes.items():
                result.slowest_s = max(result.slowest_s, elapsed)
                if status != 200:
                    result.failed[status] = result.failed.get(status, 0) + 1
                    continue
                result.acknowledged += 1
                if labels_json.get(label) != wanted[label] or config.get(label) != wanted[label]:
                    result.lost += 1
                    result.lost_examples.append(
                        f"round {round_}: {label}->{wanted[label]} acknowledged, "
                        f"labels.json {labels_json}, models.config {config}"
                    )
            if stop_early and (result.lost or result.failed):
                break
    return result


def publish_loop(
    model_dir: Path, template: Path, stop_file: Path, interval_s: float, most: int = 150
) -> int:
    """Publish copies of ``template`` until ``stop_file`` exists (at most ``most``)."""
    repository = Repository(model_dir)
    count = 0
    while not stop_file.exists() and count < most:
        job_id = f"publisher-{count}"
        staged = model_dir / MODEL / f".tmp-{job_id}"
        shutil.copytree(template, staged)
        (staged / contract.METADATA_FILE).write_text(json.dumps({"job_id": job_id}))
        repository.publish(staged, MODEL, job_id)
        count += 1
        time.sleep(interval_s)  # pacing: a worker publishes now and then, not in a tight loop
    return count


def build_repository(model_dir: Path) -> Path:
    """The race model's first versions and the publisher's template (TensorFlow needed here)."""
    from harness.models import build_test_model

    for version in TEMPLATE_VERSIONS:
        build_test_model(model_dir / MODEL / str(version), (28, 28, 1), 10, seed=version)
    template = model_dir.parent / "template"
    build_test_model(template, (28, 28, 1), 10, seed=9)
    (template / contract.ASSETS_EXTRA_DIR).mkdir(exist_ok=True)
    Repository(model_dir).sync()
    return template


@contextmanager
def publisher(model_dir: Path, template: Path, work: Path, logs: Path) -> Iterator[Path]:
    """The publishing loop in its own process; yields its stop file."""
    from harness.procs import Process

    stop_file = work / "stop-publishing"
    argv = [sys.executable, __file__, "publish", str(model_dir), str(template), str(stop_file)]
    process = Process("publisher", argv, logs)
    try:
        yield stop_file
    finally:
        stop_file.touch()
        process.popen.wait(60)
        process.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    from harness.gateway import ADMIN_KEY, gateway_running
    from harness.model_server import model_server_running
    from harness.redis import redis_running

    work = Path(tempfile.mkdtemp(prefix="promotion-race-"))
    logs, model_dir = work / "logs", work / "models"
    template = build_repository(model_dir)
    try:
        with ExitStack() as started:
            redis_url = started.enter_context(redis_running(work / "redis", logs))
            server = started.enter_context(
                model_server_running("model-server", model_dir, logs, {MODEL: 3})
            )
            gateways = [
                started.enter_context(
                    gateway_running(name, logs, redis_url, server.port, model_dir, work / name)
                )
                for name in ("gateway-a", "gateway-b")
            ]
            with publisher(model_dir, template, work, logs):
                urls = (gateways[0].url, gateways[1].url)
                result = race(urls, ADMIN_KEY, model_dir, args.rounds)
        print(result.line())
        for example in result.lost_examples[:5]:
            print("  lost:", example)
        return 1 if result.lost or result.failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        model_dir, template, stop_file = (Path(p) for p in sys.argv[2:5])
        print("published", publish_loop(model_dir, template, stop_file, 0.5), flush=True)
        raise SystemExit(0)
    raise SystemExit(main())
