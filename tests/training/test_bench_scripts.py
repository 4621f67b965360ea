"""The GPU benchmark script runs end to end (on CPU, a few steps) and reports what it should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.procs import REPO_ROOT


def run_smoke(data_dir: Path, tmp_path: Path, *options: str) -> list[dict[str, Any]]:
    """``bench/gpu_train.py --smoke`` on the tiny datasets; the rows it writes."""
    out = tmp_path / "gpu.json"
    argv = [
        sys.executable,
        "bench/gpu_train.py",
        "--smoke",
        *options,
        "--data-dir",
        str(data_dir),
        "--cifar-dataset",
        "tinycifar",
        "--var-dir",
        str(tmp_path / "var"),
        "--out",
        str(out),
    ]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows: list[dict[str, Any]] = json.loads(out.read_text())
    return rows


def test_gpu_train_smoke_on_cpu(small_data_dir: Path, tmp_path: Path) -> None:
    results = run_smoke(small_data_dir, tmp_path)
    assert [r["model"] for r in results] == ["mnist_cnn", "cifar10_cnn_bn"]
    for row in results:
        assert row["epochs_run"] == 1 and len(row["curve"]) == 1
        assert 0 <= row["best_test_accuracy"] <= 1 and row["images_per_second"] > 0
        assert row["precision_policy"] == "float32"  # no GPU here
    assert [r["dataset"] for r in results] == ["MNIST", "tinycifar"]


def test_gpu_train_smoke_runs_the_airnet_with_its_recipe(
    small_data_dir: Path, tmp_path: Path
) -> None:
    options = ("--models", "cifar10_airnet", "--airnet-widths", "8", "16", "16")
    (row,) = run_smoke(small_data_dir, tmp_path, *options)
    assert row["model"] == "cifar10_airnet" and row["recipe"] == "fast"
    assert row["augmentation"] == "flip_translate" and row["target"] == 0.94
    assert row["epochs_run"] == 1 and 0 <= row["best_test_accuracy"] <= 1
