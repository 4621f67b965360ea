"""The gateway's gRPC client for TensorFlow Serving (or our compatible server).

One long-lived ``grpc.aio`` channel (plain, or TLS with an optional client certificate); a deadline
on every call; retries with backoff on ``UNAVAILABLE``; message limits raised to TF Serving's;
``x-request-id`` forwarded.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from google.protobuf.wrappers_pb2 import Int64Value

from api.input_spec import InputSpec, input_spec_of
from fdl import contract
from fdl.grpc_tuning import MAX_MESSAGE_BYTES
from fdl.tensors import from_numpy, to_numpy
from fdl.wire.tfs_pb2 import (
    GetModelMetadataRequest,
    GetModelMetadataResponse,
    GetModelStatusRequest,
    GetModelStatusResponse,
    ModelSpec,
    ModelVersionStatus,
    PredictRequest,
    PredictResponse,
    ReloadConfigRequest,
    ReloadConfigResponse,
    SignatureDefMap,
)

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from api.serving_tls import TLS

# Every address the target resolves to gets requests in turn (a headless Service's pods, an
# ipv4: list); one address behaves as gRPC's default. The server's grpc.max_connection_age_ms
# makes the channel resolve again, so new replicas are found.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
# The gRPC method paths are these prefixes plus the method name ("Predict"): benchmarks and tools
# that call the model server with a bare channel use them too.
PREDICTION_SERVICE = "/tensorflow.serving.PredictionService/"
MODEL_SERVICE = "/tensorflow.serving.ModelService/"
# A model no one names: asked for, a server that answers NOT_FOUND is up (ping, replica checks).
PROBE_MODEL = "__readiness_probe__"


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error_code: int
    error_message: str


def _is_unavailable(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.UNAVAILABLE


def model_spec(
    name: str, version: int | None = None, label: str | None = None, signature: str | None = None
) -> ModelSpec:
    spec = ModelSpec(name=name, signature_name=signature or "")
    if version is not None:
        spec.version.CopyFrom(Int64Value(value=version))
    elif label is not None:
        spec.version_label = label
    return spec


class ServingClient:
    """Async calls to the model server's ``PredictionService`` and ``ModelService``.

    Args:
        target: a gRPC target (``host:port``, ``unix:/path``, ``dns:///name:port``, ``ipv4:a,b``);
            calls are spread round-robin over the addresses it resolves to.
        timeout_s: the deadline of Predict and config reloads.
        retries: attempts per call while the server answers ``UNAVAILABLE`` (1: no retry).
        metadata_timeout_s: the deadline of metadata and status calls (default ``timeout_s``).
        tls: the CA, client key pair and server name for TLS; ``None`` for plain gRPC.

    Every method raises ``grpc.aio.AioRpcError`` with the server's status when a call fails;
    :meth:`input_spec` raises :class:`ModelContractError` for a model outside the contract.
    """

    def __init__(
        self,
        target: str,
        timeout_s: float = 10.0,
        retries: int = 3,
        metadata_timeout_s: float | None = None,
        tls: TLS | None = None,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.metadata_timeout_s = metadata_timeout_s or timeout_s
        self.retries = retries
        options: list[tuple[str, int | str]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 0),
            # Reconnect fast after a model-server restart (gRPC's default backs off to 2 min).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.service_config", _SERVICE_CONFIG),
        ]
        if tls is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            self.channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)
        self._predict = self._method(
            PREDICTION_SERVICE + "Predict", PredictRequest, PredictResponse
        )
        self._metadata = self._method(
            PREDICTION_SERVICE + "GetModelMetadata",
            GetModelMetadataRequest,
            GetModelMetadataResponse,
        )
        self._status = self._method(
            MODEL_SERVICE + "GetModelStatus", GetModelStatusRequest, GetModelStatusResponse
        )
        self._reload = self._method(
            MODEL_SERVICE + "HandleReloadConfigRequest", ReloadConfigRequest, ReloadConfigResponse
        )

    def _method(
        self, path: str, request: type[Message], response: type[Message]
    ) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        return self.channel.unary_unary(
            path,
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self.channel.close()

    async def _call(
        self,
        method: Callable[..., Awaitable[Any]],
        request: Message,
        request_id: str | None,
        timeout_s: float | None = None,
    ) -> Any:
        metadata = (("x-request-id", request_id),) if request_id else None
        timeout = timeout_s or self.timeout_s
        try:
            return await method(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            if not _is_unavailable(error) or self.retries <= 1:
                raise
        # UNAVAILABLE (server restarting, connection lost): retry with backoff. Imported here:
        # tenacity costs start-up time and is needed only when the model server goes away.
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_is_unavailable),
            stop=stop_after_attempt(self.retries - 1),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            reraise=True,
        ):
            with attempt:
                return await method(request, timeout=timeout, metadata=metadata)
        raise AssertionError("unreachable")  # pragma: no cover

    async def predict(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        version: int | None = None,
        label: str | None = None,
        request_id: str | None = None,
    ) -> tuple[int, dict[str, np.ndarray]]:
        """Predict with the ``serving_default`` signature of one model version.

        Args:
            model: the served model's name.
            inputs: the input tensors by signature key.
            version: a version number; ``label`` instead, or neither for the latest.
            label: a version label (``stable``, ``canary``).
            request_id: forwarded as ``x-request-id`` metadata.

        Returns:
            The version that answered and the output tensors by key.
        """
        request = PredictRequest(
            model_spec=model_spec(model, version, label, contract.SIGNATURE_NAME)
        )
        for key, array in inputs.items():
            from_numpy(array, request.inputs[key], content=True)
        response: PredictResponse = await self._call(self._predict, request, request_id)
        outputs = {k: to_numpy(v, k) for k, v in response.outputs.items()}
        return int(response.model_spec.version.value), outputs

    async def input_spec(
        self,
        model: str,
        version: int | None = None,
        label: str | None = None,
        request_id: str | None = None,
    ) -> InputSpec:
        """The input of a version's ``serving_default`` signature.

        Args:
            model: the served model's name.
            version: a version number; ``label`` instead, or neither for the latest.
            label: a version label.
            request_id: forwarded as ``x-request-id`` metadata.

        Returns:
            The version that answered, its input key (``images`` when present), dtype and shape.

        Raises:
            ModelContractError: the version has no ``serving_default`` signature or no input.
        """
        request = GetModelMetadataRequest(
            model_spec=model_spec(model, version, label), metadata_field=["signature_def"]
        )
        response: GetModelMetadataResponse = await self._call(
            self._metadata, request, request_id, self.metadata_timeout_s
        )
        signatures = SignatureDefMap()
        # The Any's type_url names tensorflow.serving.SignatureDefMap; the bytes are identical.
        signatures.ParseFromString(response.metadata["signature_def"].value)
        return input_spec_of(signatures, model, int(response.model_spec.version.value))

    async def label_version(self, model: str, label: str, timeout_s: float | None = None) -> int:
        """The version ``label`` of ``model`` names on the server now (``GetModelMetadata`` of
        the label: TF Serving has no call that lists labels). Raises as the call does (an
        unknown label: ``INVALID_ARGUMENT`` or ``NOT_FOUND``)."""
        request = GetModelMetadataRequest(
            model_spec=model_spec(model, None, label), metadata_field=["signature_def"]
        )
        response: GetModelMetadataResponse = await self._call(
            self._metadata, request, None, timeout_s or self.metadata_timeout_s
        )
        return int(response.model_spec.version.value)

    async def model_status(
        self, model: str, request_id: str | None = None, timeout_s: float | None = None
    ) -> list[VersionStatus]:
        """The state of each version of ``model`` the server knows.

        Args:
            model: the served model's name.
            request_id: forwarded as ``x-request-id`` metadata.
            timeout_s: the deadline (default ``metadata_timeout_s``).

        Returns:
            One :class:`VersionStatus` (``AVAILABLE``, ``LOADING``…) per version.
        """
        request = GetModelStatusRequest(model_spec=model_spec(model))
        response: GetModelStatusResponse = await self._call(
            self._status, request, request_id, timeout_s or self.metadata_timeout_s
        )
        return [
            VersionStatus(
                version=int(s.version),
                state=ModelVersionStatus.State.Name(s.state),
                error_code=int(s.status.error_code),
                error_message=s.status.error_message,
            )
            for s in response.model_version_status
        ]

    async def reload_config(
        self, request: ReloadConfigRequest, timeout_s: float | None = None
    ) -> ReloadConfigResponse:
        """Hand the server a new model config.

        Args:
            request: the ``ModelServerConfig`` to apply, in a ``ReloadConfigRequest``.
            timeout_s: the deadline (default ``timeout_s``).

        Returns:
            The server's answer; a refused config is an error status inside it, not an exception.
        """
        response: ReloadConfigResponse = await self._call(self._reload, request, None, timeout_s)
        return response

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether the server answers at all (an unknown model's NOT_FOUND is an answer).

        Args:
            timeout_s: how long to wait for the answer; no retries.

        Returns:
            False when the server is unreachable or does not answer in time, else True.
        """
        request = GetModelStatusRequest(model_spec=model_spec(PROBE_MODEL))
        try:
            await self._status(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            return error.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        return True
