"""The calls the gateway benches make: Predict straight to the model server over gRPC (sync or
asyncio channels), classify through the gateway over HTTP, and the accuracy of each on a
labelled set."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import numpy as np

from api.serving_client import PREDICTION_SERVICE, model_spec
from fdl import contract
from fdl.tensors import to_numpy, to_tensor_proto
from fdl.wire.tfs_pb2 import PredictRequest, PredictResponse

Call = Callable[[], Awaitable[None]]


def predict_stub(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    """``PredictionService/Predict`` on ``channel``, without the generated stubs."""
    return channel.unary_unary(
        PREDICTION_SERVICE + "Predict",
        request_serializer=PredictRequest.SerializeToString,
        response_deserializer=PredictResponse.FromString,
    )


def predict_request(model: str, images: np.ndarray) -> PredictRequest:
    """A Predict of ``images`` (uint8, NHWC) by the contract's signature of ``model``."""
    request = PredictRequest(model_spec=model_spec(model, signature=contract.SIGNATURE_NAME))
    request.inputs[contract.INPUT_KEY].CopyFrom(to_tensor_proto(images))
    return request


def grpc_call(channel: grpc.aio.Channel, model: str, images: np.ndarray) -> Call:
    """One asyncio Predict of ``images``, as the gateway makes it; the request is built per call."""
    predict = predict_stub(channel)

    async def call() -> None:
        await predict(predict_request(model, images), timeout=10)

    return call


def grpc_accuracy(
    target: str, model: str, images: np.ndarray, labels: np.ndarray, batch: int, timeout: float
) -> float:
    """The share of ``images`` whose top score is their label, Predicted ``batch`` at a time."""
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(target, options=options) as channel:
        predict = predict_stub(channel)
        correct = 0
        for start in range(0, len(images), batch):
            rows = np.ascontiguousarray(images[start : start + batch])
            response = predict(predict_request(model, rows), timeout=timeout)
            scores = to_numpy(response.outputs[contract.SCORES_KEY])
            correct += int((scores.argmax(axis=1) == labels[start : start + batch]).sum())
    return correct / len(images)


def http_accuracy(
    url: str,
    model: str,
    files: list[bytes],
    labels: np.ndarray,
    suffix: str,
    batch: int,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> float:
    """The share of ``files`` whose class through the gateway's multipart classify is their
    label, ``batch`` files a request (named ``i.suffix``)."""
    correct = 0
    with httpx.Client(timeout=timeout, headers=headers) as client:
        for start in range(0, len(files), batch):
            parts = [
                ("file", (f"{i}.{suffix}", data, "application/octet-stream"))
                for i, data in enumerate(files[start : start + batch])
            ]
            response = client.post(f"{url}/v1/models/{model}:classify", files=parts)
            response.raise_for_status()
            predicted = np.array([p["class_id"] for p in response.json()["predictions"]])
            correct += int((predicted == labels[start : start + batch]).sum())
    return correct / len(files)
