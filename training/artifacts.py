"""Write a trained model's SavedModel and everything in its ``assets.extra/`` into a folder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from fdl import contract
from fdl.architectures import ARCHITECTURES
from fdl.jobspec import JobSpec
from training.data import ImageData
from training.export import export_savedmodel, float32_copy
from training.model_kind import ModelKind
from training.models import build_job_model
from training.preprocess import network_input_shape
from training.report import evaluation, naming, strict_json, write_report
from training.trainer import TrainOutcome
from training.warmup import write_warmup


def exportable(outcome: TrainOutcome, spec: JobSpec, num_classes: int) -> keras.Model:
    """The trained model, or a float32 single-device copy of it after a GPU run."""
    info = outcome.runtime
    if info.get("precision_policy") == "float32" and info.get("replicas", 1) == 1:
        return outcome.model
    arch = ARCHITECTURES[spec.model]
    shape = network_input_shape(arch.image_shape, arch.family)
    return float32_copy(outcome.model, lambda: build_job_model(spec, shape, num_classes))


def serving_profile(dataset: str) -> str:
    """The gateway's preprocessing profile that makes what this dataset's images are: MNIST's
    digits were normalised as the ``digit`` profile normalises; CIFAR-10 and image folders (read
    with :mod:`fdl.photo`) are what the ``photo`` profile makes, whatever the channel count."""
    return contract.DIGIT_PROFILE if dataset == "mnist" else contract.PHOTO_PROFILE


def write_model(
    folder: Path,
    job_id: str,
    spec: JobSpec,
    data: ImageData,
    outcome: TrainOutcome,
) -> dict[str, Any]:
    """SavedModel + metadata.json + warmup + evaluation report; returns the metadata."""
    arch = ARCHITECTURES[spec.model]
    model = exportable(outcome, spec, len(data.class_names))
    export_savedmodel(model, arch.family, arch.image_shape, data.class_names, folder)
    extra = folder / contract.ASSETS_EXTRA_DIR
    assert outcome.y_true is not None and outcome.y_pred is not None
    report = evaluation(outcome.y_true, outcome.y_pred, data.class_names, outcome.metrics)
    files = write_report(extra, report, outcome.history, f"{spec.publish_as} ({spec.model})")
    write_warmup(folder / contract.WARMUP_FILE, str(spec.publish_as), data.x_test[:8])
    kind = ModelKind.of(data, arch.image_shape)  # what only_if_better compares
    metadata = {
        "job_id": job_id,
        "model": spec.publish_as,
        "architecture": spec.model,
        "spec": spec.model_dump(mode="json"),
        # name, layout, test count and fingerprint: what only_if_better compares besides the input
        "dataset": {
            "name": data.name,
            "source": data.source,
            "layout": data.layout,
            **outcome.counts,
            "test_sha256": kind.test_sha256,
        },
        "class_names": list(data.class_names),
        "input": kind.input(),
        contract.PROFILE_KEY: serving_profile(data.name),  # what the gateway preprocesses with
        "metrics": outcome.metrics,
        "per_class_accuracy": report["per_class_accuracy"],
        "history": outcome.history,
        "runtime": outcome.runtime,
        "report_files": files,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with naming(folder / contract.METADATA_FILE) as path:
        path.write_text(strict_json(metadata))
    return metadata
