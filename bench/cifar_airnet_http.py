"""Issue 18's CPU goal: ``cifar10_airnet`` at >= 90% on CIFAR-10 (JPEG q75) within 30 minutes of
wall time, through a normal job submitted over HTTP, with its accuracy-vs-time curve.

    .venv/bin/python bench/cifar_airnet_http.py [--epochs 26] [--png docs/img/airnet_curve.png]
        [--keep-model DIR]
    .venv/bin/python bench/cifar_airnet_http.py --smoke --data-dir D --dataset tinycifar

Starts a private stack: Redis, one training worker (the command of ``fdl up``) and the gateway.
Submits ``POST /v1/jobs`` with the spec below (the ``fast`` recipe's defaults) and polls
``GET /v1/jobs/{id}`` every second. The curve is the job's validation accuracy (5,000 held-out
training images, with the flip test-time augmentation) after each epoch against wall time since
submission; its last point is the test accuracy of the finished job (test set, after export and
publication). Also reports the published model on the exact first 1,000 test images. Writes
JSON (``--out``) and a PNG of the curve (``--png``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from training_accuracy import exact_subset_accuracy
from training_common import DEFAULT_DATA, ROOT

from fdl.queue import make_celery
from fdl.redis_server import redis_server_argv
from harness.procs import Process, free_port, wait_for

KEY = "bench-admin-key-0123456789"  # 16+ characters: shorter keys stop the gateway
WORKER = ["fdl-worker", "-Q", "training"]
TARGET, BUDGET_S = 0.90, 30 * 60


def start_stack(work: Path, data_dir: Path) -> tuple[str, Path, list[Process]]:
    logs, models = work / "logs", work / "models"
    redis_port, gateway_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    procs = [Process("redis", redis_server_argv(redis_port, work / "redis"), logs)]
    wait_for(redis.Redis.from_url(redis_url).ping, 20, "redis")
    env = {"FDL_REDIS_URL": redis_url, "FDL_MODEL_DIR": str(models), "TF_CPP_MIN_LOG_LEVEL": "2"}
    worker_env = {**env, "FDL_DATA_DIR": str(data_dir), "FDL_VAR_DIR": str(ROOT / "var")}
    worker = Process("worker", WORKER, logs, worker_env)
    procs.append(worker)
    # Ready before submission: the worker's start-up is not part of a job's wall time.
    celery = make_celery(redis_url)
    wait_for(lambda: celery.control.ping(timeout=0.5), 120, "worker", check=worker.ensure_alive)
    gateway_env = {
        **env,
        "FDL_GATEWAY_PORT": str(gateway_port),
        "FDL_SERVING_GRPC_PORT": str(free_port()),  # no model server: jobs only
        "FDL_API_KEYS": KEY,
        "FDL_RATE_LIMIT_PER_MINUTE": "0",
    }
    procs.append(Process("gateway", [sys.executable, "-m", "api"], logs, gateway_env))
    url = f"http://127.0.0.1:{gateway_port}"
    wait_for(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 60, "gateway")
    return url, models, procs


def run(url: str, spec: dict, timeout_s: float) -> tuple[dict, list[dict]]:
    curve: list[dict] = []
    with httpx.Client(base_url=url, headers={"x-api-key": KEY}, timeout=30) as client:
        response = client.post("/v1/jobs", json=spec)
        response.raise_for_status()
        job_id = response.json()["id"]
        submitted = time.monotonic()
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            progress = job.get("progress") or {}
            seen = curve[-1]["epoch"] if curve else 0
            if progress.get("val_accuracy") is not None and progress.get("epoch", 0) > seen:
                curve.append(
                    {
                        "epoch": progress["epoch"],
                        "seconds": round(time.monotonic() - submitted, 1),
                        "val_accuracy": progress["val_accuracy"],
                        "images_per_second": progress.get("images_per_second"),
                    }
                )
                print(json.dumps(curve[-1]), flush=True)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                job["wall_seconds"] = round(time.monotonic() - submitted, 1)
                return job, curve
            if time.monotonic() - submitted > timeout_s:
                client.delete(f"/v1/jobs/{job_id}")
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s:.0f}s")
            time.sleep(1.0)  # polling interval of the job's record


def plot(curve: list[dict], test: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    minutes = [p["seconds"] / 60 for p in curve]
    ax.plot(minutes, [p["val_accuracy"] * 100 for p in curve], "o-", label="validation (5,000)")
    ax.plot([test["seconds"] / 60], [test["accuracy"] * 100], "s", label="test, job finished")
    ax.axhline(TARGET * 100, color="grey", linestyle="--", linewidth=1, label="goal 90%")
    ax.axvline(BUDGET_S / 60, color="grey", linestyle=":", linewidth=1, label="30 min")
    ax.set_xlabel("wall time since submission (min)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("cifar10_airnet over HTTP on CIFAR-10 (JPEG q75)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=26)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 128 images")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--png", type=Path)
    parser.add_argument(
        "--keep-model", type=Path, help="copy the published SavedModel here (for cifar_photos.py)"
    )
    args = parser.parse_args()
    spec: dict = {"model": "cifar10_airnet", "dataset": args.dataset, "epochs": args.epochs}
    if args.smoke:
        spec |= {"epochs": 1, "max_train_examples": 160, "max_test_examples": 64}
        spec |= {"batch_size": 32, "validation_split": 32}
    with tempfile.TemporaryDirectory() as tmp:
        url, models, procs = start_stack(Path(tmp), args.data_dir)
        try:
            job, curve = run(url, spec, 3 * BUDGET_S)
        finally:
            for proc in reversed(procs):
                proc.stop()
        if job["status"] != "succeeded":
            print(json.dumps({"status": job["status"], "error": job.get("error")}))
            return 1
        result = job["result"]
        test = {"seconds": job["wall_seconds"], "accuracy": result["metrics"]["test_accuracy"]}
        path = models / result["model"] / str(result["version"])
        summary = {
            "model": "cifar10_airnet",
            "dataset": "CIFAR-10 (JPEG q75)" if args.dataset == "cifar10" else args.dataset,
            "spec": job["spec"],
            "epochs_run": result["epochs_run"],
            "test_accuracy": test["accuracy"],
            "exact_first1000_accuracy": exact_subset_accuracy(path, args.data_dir),
            "wall_seconds": test["seconds"],
            "goal_met": test["accuracy"] >= TARGET and test["seconds"] <= BUDGET_S,
            "curve": curve,
        }
        if args.keep_model:
            shutil.copytree(path, args.keep_model, dirs_exist_ok=True)
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.png:
        plot(curve, test, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
