"""The Predict path shared by gRPC, REST, warmup and batching: decode, validate, run, encode."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from tensorflow_serving.apis import predict_pb2

from serving.servable import Servable, signature_key
from serving.tensors import from_numpy, to_numpy

if TYPE_CHECKING:
    from serving.batching import BatchingConfig


def run_arrays(
    servable: Servable,
    signature_name: str,
    inputs: Mapping[str, np.ndarray],
    output_filter: list[str],
    batching: BatchingConfig | None = None,
) -> dict[str, np.ndarray]:
    servable.validate(signature_name, inputs)
    keys = servable.output_keys(signature_name, output_filter)
    if batching is not None:
        from serving.batching import batcher_for

        return batcher_for(servable, signature_key(signature_name), keys, batching).submit(inputs)
    return servable.run(signature_name, inputs, keys)


def predict(
    servable: Servable,
    request: predict_pb2.PredictRequest,
    batching: BatchingConfig | None = None,
) -> predict_pb2.PredictResponse:
    inputs = {key: to_numpy(tensor, key) for key, tensor in request.inputs.items()}
    outputs = run_arrays(
        servable, request.model_spec.signature_name, inputs, list(request.output_filter), batching
    )
    response = predict_pb2.PredictResponse()
    fill_model_spec(response.model_spec, servable, request.model_spec.signature_name)
    for key, array in outputs.items():
        from_numpy(array, response.outputs[key])
    return response


def fill_model_spec(spec: Any, servable: Servable, signature_name: str | None) -> None:
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name is not None:
        spec.signature_name = signature_key(signature_name)
