"""TF Serving warmup requests (``assets.extra/tf_serving_warmup_requests``): PredictionLogs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from fdl import contract


def write_warmup(path: Path, model_name: str, images: np.ndarray, batch_sizes=(1, 8)) -> int:
    """One PredictRequest per batch size, with real test images; returns the record count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for size in batch_sizes:
            batch = np.resize(images, (size, *images.shape[1:])).astype(np.uint8)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = contract.SIGNATURE_NAME
            request.inputs[contract.INPUT_KEY].CopyFrom(tf.make_tensor_proto(batch, tf.uint8))
            record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(record.SerializeToString())
            written += 1
    return written
