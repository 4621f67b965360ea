"""Replay ``assets.extra/tf_serving_warmup_requests`` against a freshly loaded version."""

from __future__ import annotations

from tensorflow_serving.apis import prediction_log_pb2

from serving.servable import Servable, read_warmup_requests


def warm_up(servable: Servable, iterations: int = 1) -> int | None:
    """Run every warmup record ``iterations`` times (``--num_request_iterations_for_warmup``);
    any failure fails the load, as in TF Serving. Returns the number of records, or None when
    the version has no warmup file."""
    from serving.predict import predict

    records = read_warmup_requests(servable.path)
    if records is None:
        return None
    count = 0
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise ValueError(f"warmup record of type {kind!r} is not supported (only predict_log)")
        for _ in range(max(1, iterations)):
            predict(servable, log.predict_log.request)
        count += 1
    return count
