"""The Predict path shared by gRPC, REST, warmup and batching: decode, validate, run, encode."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from fdl import tensors
from serving.errors import invalid
from serving.servable import Servable, signature_key

if TYPE_CHECKING:
    from serving.batching import Batcher
    from serving.batching_config import Batching


def prepare(
    servable: Servable,
    signature_name: str,
    inputs: Mapping[str, np.ndarray],
    output_filter: list[str],
) -> list[str]:
    """Validate inputs against the signature; returns the output keys to fetch. The output
    filter is checked first: TF Serving checks it before its Session checks dtypes and shapes."""
    keys = servable.output_keys(signature_name, output_filter)
    servable.validate(signature_name, inputs)
    return keys


def batcher(
    servable: Servable, signature_name: str, keys: list[str], batching: Batching
) -> Batcher:
    from serving.batching import batcher_for

    return batcher_for(servable, signature_key(signature_name), keys, batching)


def run_arrays(
    servable: Servable,
    signature_name: str,
    inputs: Mapping[str, np.ndarray],
    output_filter: list[str],
    batching: Batching | None = None,
    timeout: float | None = None,
) -> dict[str, np.ndarray]:
    """Run on the calling thread, or (with batching) through the batcher on the server's loop;
    ``timeout``: how long the caller waits, after which its batch need not run."""
    keys = prepare(servable, signature_name, inputs, output_filter)
    if batching is not None:
        return batcher(servable, signature_name, keys, batching).submit(inputs, timeout)
    return servable.run(signature_name, inputs, keys)


def to_numpy(proto: tensor_pb2.TensorProto, name: str) -> np.ndarray:
    """Decode a request tensor; a malformed one is INVALID_ARGUMENT naming it."""
    return tensors.to_numpy(proto, name, invalid)


def from_numpy(
    array: np.ndarray, proto: tensor_pb2.TensorProto | None = None, content: bool = False
) -> tensor_pb2.TensorProto:
    """Encode an output array into ``proto`` (a new official ``TensorProto`` if None)."""
    target = proto if proto is not None else tensor_pb2.TensorProto()
    return tensors.from_numpy(array, target, content, invalid)


def decode_request(
    servable: Servable, request: predict_pb2.PredictRequest
) -> dict[str, np.ndarray]:
    """The request's tensors, in TF Serving's order of checks: the signature
    (FAILED_PRECONDITION), the input names, then each tensor as it is parsed."""
    servable.check_input_names(request.model_spec.signature_name, request.inputs.keys())
    return {key: to_numpy(tensor, key) for key, tensor in request.inputs.items()}


def enqueue(
    servable: Servable,
    request: predict_pb2.PredictRequest,
    batching: Batching,
    timeout: float | None = None,
) -> asyncio.Future:
    """On the loop: validate a request and queue it; the future resolves to its outputs."""
    inputs = decode_request(servable, request)
    name = request.model_spec.signature_name
    keys = prepare(servable, name, inputs, list(request.output_filter))
    return batcher(servable, name, keys, batching).enqueue(inputs, timeout)


def predict(
    servable: Servable,
    request: predict_pb2.PredictRequest,
    batching: Batching | None = None,
    tensor_content: bool = False,
) -> predict_pb2.PredictResponse:
    outputs = run_arrays(
        servable,
        request.model_spec.signature_name,
        decode_request(servable, request),
        list(request.output_filter),
        batching,
    )
    return encode_response(servable, request, outputs, tensor_content)


def encode_response(
    servable: Servable,
    request: predict_pb2.PredictRequest,
    outputs: Mapping[str, np.ndarray],
    tensor_content: bool = False,
) -> predict_pb2.PredictResponse:
    """Outputs in typed fields, or with ``tensor_content`` in that field (TF Serving's
    ``--enable_serialization_as_tensor_content``)."""
    response = predict_pb2.PredictResponse()
    fill_model_spec(response.model_spec, servable, request.model_spec.signature_name)
    for key, array in outputs.items():
        from_numpy(array, response.outputs[key], tensor_content)
    return response


def fill_model_spec(spec: Any, servable: Servable, signature_name: str | None) -> None:
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name is not None:
        spec.signature_name = signature_key(signature_name)
