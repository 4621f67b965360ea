"""A model published by a real worker job follows the SavedModel contract of fdl/contract.py,
loads through TF Serving's Session loader, and predicts what training-time evaluation predicted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2

from fdl import contract
from fdl.repository import CONFIG_FILE
from harness.savedmodel import load_session, predict
from training.data.mnist import load_mnist


def test_signature_matches_the_contract(published_logreg: dict[str, Any]) -> None:
    session, signature = load_session(published_logreg["path"])
    session.close()
    assert signature.method_name == contract.PREDICT_METHOD_NAME
    assert set(signature.inputs) == {contract.INPUT_KEY}
    assert set(signature.outputs) == {contract.SCORES_KEY, contract.CLASSES_KEY}
    images = signature.inputs[contract.INPUT_KEY]
    assert tf.dtypes.as_dtype(images.dtype).as_datatype_enum == tf.uint8.as_datatype_enum
    assert images.dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in images.tensor_shape.dim] == [-1, 28, 28, 1]
    scores, classes = (signature.outputs[k] for k in (contract.SCORES_KEY, contract.CLASSES_KEY))
    assert scores.dtype == tf.float32.as_datatype_enum
    assert classes.dtype == tf.string.as_datatype_enum
    assert [d.size for d in scores.tensor_shape.dim] == [-1, 10]
    assert [d.size for d in classes.tensor_shape.dim] == [-1, 10]


def test_predictions_match_training_time_evaluation(
    published_logreg: dict[str, Any], data_dir: Path
) -> None:
    mnist = load_mnist(data_dir, allow_download=False)
    x, y = mnist.x_test[:300], mnist.y_test[:300]
    session, signature = load_session(published_logreg["path"])
    with session:
        scores, classes = predict(session, signature, x)
    assert scores.shape == (300, 10) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    assert [c.decode() for c in classes[0]] == [str(i) for i in range(10)]
    accuracy = float((scores.argmax(axis=1) == y).mean())
    metrics = published_logreg["record"]["result"]["metrics"]
    assert round(accuracy, 6) == metrics["test_accuracy"]
    assert accuracy > 0.6  # it learned something in 1,000 examples


def test_metadata_report_and_warmup(published_logreg: dict[str, Any]) -> None:
    path: Path = published_logreg["path"]
    record = published_logreg["record"]
    metadata = json.loads((path / contract.METADATA_FILE).read_text())
    assert metadata["job_id"] == record["id"]
    assert metadata["spec"] == record["spec"]
    assert metadata["class_names"] == [str(i) for i in range(10)]
    assert metadata["dataset"]["name"] == "mnist"
    assert metadata["dataset"]["test"] == 300
    assert metadata["metrics"] == record["result"]["metrics"]
    assert metadata["tensorflow_version"] == tf.__version__
    assert metadata["created_at"]

    report = json.loads((path / contract.EVALUATION_FILE).read_text())
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.sum() == 300
    assert round(np.trace(matrix) / 300, 6) == report["test_accuracy"]
    assert report["test_accuracy"] == metadata["metrics"]["test_accuracy"]
    for name in ("confusion_matrix.png", "training_curves.png"):
        with Image.open(path / contract.ASSETS_EXTRA_DIR / name) as image:
            assert image.format == "PNG" and image.width > 100

    records = list(tf.compat.v1.io.tf_record_iterator(str(path / contract.WARMUP_FILE)))
    assert len(records) == 2
    session, signature = load_session(path)
    with session:
        for raw in records:
            log = prediction_log_pb2.PredictionLog.FromString(raw)
            request = log.predict_log.request
            assert request.model_spec.signature_name == contract.SIGNATURE_NAME
            images = tf.make_ndarray(request.inputs[contract.INPUT_KEY])
            assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
            scores, _ = predict(session, signature, images)
            assert scores.shape == (images.shape[0], 10)


def test_published_atomically_and_in_the_model_config(published_logreg: dict[str, Any]) -> None:
    path: Path = published_logreg["path"]
    model_path = path.parent
    assert path.name.isdigit()
    assert not [p for p in model_path.iterdir() if not p.name.isdigit()]  # no staging left
    config = (model_path.parent / CONFIG_FILE).read_text()
    assert f'name: "{model_path.name}"' in config
    assert f'base_path: "{model_path.resolve()}"' in config
