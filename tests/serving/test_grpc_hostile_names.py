"""Requests that carry huge names: health service names bounded as TF Serving's gRPC C++ health
service bounds them (and open ``Watch`` streams bounded), gRPC error messages that echo a
request cut to fit a default client's metadata limit, and a REST integer of thousands of digits
refused as rapidjson refuses a number beyond a double. ``api_server`` is in conftest.py."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import get_model_status_pb2

from harness.tfs import images, predict_request, rest_json, rpc_error
from serving.protocol.grpc.health import MAX_WATCHES
from serving.protocol.grpc.servicer import MAX_MESSAGE_BYTES

PREDICTION = "tensorflow.serving.PredictionService"
HEALTH_LIMIT = 200  # gRPC C++'s MAX_SERVICE_NAME_LENGTH, in bytes


def _health(server) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(server.channel)


def _request(service: str) -> health_pb2.HealthCheckRequest:
    return health_pb2.HealthCheckRequest(service=service)


@pytest.mark.parametrize(
    "name", ["x" * (HEALTH_LIMIT + 1), "é" * 101, "x" * 2**20], ids=["201", "202-bytes", "1MB"]
)
def test_health_check_refuses_a_long_service_name(api_server, name: str) -> None:
    code, details = rpc_error(lambda: _health(api_server).Check(_request(name), timeout=10))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "could not parse request")


def test_health_check_takes_names_up_to_the_bound(api_server) -> None:
    stub = _health(api_server)
    assert (
        stub.Check(_request(PREDICTION), timeout=10).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    code, details = rpc_error(lambda: stub.Check(_request("x" * HEALTH_LIMIT), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    if api_server.impl == "fdl":
        assert details == "service name unknown"  # gRPC C++'s text (grpcio's Python sends none)
    watch = stub.Watch(_request("é" * (HEALTH_LIMIT // 2)), timeout=10)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    watch.cancel()


def test_health_watch_with_a_long_name_ends_at_once(api_server) -> None:
    """The stream ends with gRPC C++'s status instead of staying open holding the name: 40 such
    watches of 10 MB names held 1.4 GB before."""
    stub = _health(api_server)
    for size in (HEALTH_LIMIT + 1, 10 * 2**20):
        watch = stub.Watch(_request("w" * size), timeout=10)
        code, details = rpc_error(lambda watch=watch: list(watch))
        assert (code, details) == (grpc.StatusCode.INTERNAL, "could not parse request")


def test_open_health_watches_are_bounded(api_server) -> None:
    if api_server.impl != "fdl":
        pytest.skip("platform: TF Serving does not bound open Watch streams")
    stub = _health(api_server)
    watches = [stub.Watch(_request(f"w{i}"), timeout=60) for i in range(MAX_WATCHES)]
    try:
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        extra = stub.Watch(_request(""), timeout=10)
        code, details = rpc_error(lambda: list(extra))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "Watch" in details, details
    finally:
        for watch in watches:
            watch.cancel()
    deadline = time.monotonic() + 30  # cancelled streams end on the server soon after
    while True:
        watch = stub.Watch(_request(""), timeout=10)
        try:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "closed watches were not released"
        finally:
            watch.cancel()


def _status_request(name: str) -> get_model_status_pb2.GetModelStatusRequest:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    return request


def _many_inputs():
    request = predict_request("tiny", images(1))
    for i in range(5000):
        request.inputs[f"extra{i}"].CopyFrom(request.inputs["images"])
    return request


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (
            lambda s: s.prediction().Predict(predict_request("n" * 100_000, images(1)), timeout=10),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda s: s.models().GetModelStatus(_status_request("n" * 100_000), timeout=10),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda s: s.prediction().Predict(
                predict_request("tiny", images(1), label="é" * 50_000), timeout=10
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda s: s.prediction().Predict(_many_inputs(), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
    ids=["predict-name", "status-name", "label", "5000-inputs"],
)
def test_error_messages_that_echo_a_request_are_cut(api_server, call, code) -> None:
    """A default client (16 KiB of metadata) gets the status, not RESOURCE_EXHAUSTED for a
    message of 100 KB to 1 MB. TF Serving sends the message whole, so only ours is checked."""
    if api_server.impl != "fdl":
        pytest.skip("platform: TF Serving sends error messages whole")
    got, details = rpc_error(lambda: call(api_server))
    assert got == code, (got, details[:200])
    assert details.endswith(" more characters)"), details[-100:]
    # Its UTF-8 is no longer than what gRPC sends, the bound, and the "… (N more characters)".
    assert len(details.encode("utf-8")) <= MAX_MESSAGE_BYTES + 40, len(details)


def test_short_error_messages_are_whole(api_server) -> None:
    code, details = rpc_error(
        lambda: api_server.prediction().Predict(predict_request("nope", images(1)), timeout=10)
    )
    assert (code, details) == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )


def rest_json_raw(server, body: bytes) -> tuple[int, dict]:
    url = f"{server.rest}/v1/models/tiny:predict"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("digits", [320, 5000, 100_000])
@pytest.mark.parametrize("sign", ["", "-"])
def test_rest_integer_beyond_a_double_is_a_parse_error(api_server, digits: int, sign: str) -> None:
    """rapidjson reads an integer past uint64 as a double and refuses one beyond a double's range
    while parsing, as it refuses 1e400 (before: Python's 4300-digit limit naming
    sys.set_int_max_str_digits(), or a type error under it)."""
    number = sign + "9" * digits
    status, reply = rest_json_raw(api_server, f'{{"instances": [{number}]}}'.encode())
    assert status == 400, reply
    assert "Number too big to be stored in double" in reply["error"], reply
    if api_server.impl == "fdl":
        assert reply == {"error": "JSON Parse error: Number too big to be stored in double"}


def test_rest_integers_within_a_double_still_read(api_server) -> None:
    """An integer of 300 digits is read (as a double, by rapidjson): the error is then about the
    value (``tiny`` takes uint8), not the parse."""
    status, reply = rest_json(f"{api_server.rest}/v1/models/tiny:predict", {"instances": [10**300]})
    assert status == 400 and "Number too big" not in reply["error"], reply
