"""TF Serving warmup requests (``assets.extra/tf_serving_warmup_requests``): PredictionLogs.

The one writer of the format: training's exports and the test models both write their records
here; the model server reads them back (:func:`serving.servable.read_warmup_requests`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from fdl import contract


def warmup_record(
    model_name: str, images: np.ndarray, input_key: str = contract.INPUT_KEY
) -> bytes:
    """One serialized ``PredictionLog`` whose ``PredictRequest`` sends ``images`` as uint8."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = contract.SIGNATURE_NAME
    request.inputs[input_key].CopyFrom(tf.make_tensor_proto(images, tf.uint8))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    return log.SerializeToString()


def write_warmup_records(path: Path, records: Iterable[bytes]) -> int:
    """Write the records as a TFRecord file; returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
            written += 1
    return written


def write_warmup(path: Path, model_name: str, images: np.ndarray, batch_sizes=(1, 8)) -> int:
    """One PredictRequest per batch size, with real test images; returns the record count."""
    return write_warmup_records(
        path,
        (
            warmup_record(model_name, np.resize(images, (size, *images.shape[1:])).astype(np.uint8))
            for size in batch_sizes
        ),
    )
