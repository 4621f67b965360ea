"""The REST API with a keep-alive client: no per-call stall, several calls in flight, errors.

A keep-alive client (requests.Session, aiohttp, a browser) sends the next request on the same
connection. A server that writes a response's headers and body in two small sends without
TCP_NODELAY makes every such call wait for the client's delayed ACK, about 40 ms on Linux.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time

import numpy as np
import pytest

from harness.tfs import expected_scores, images

CALLS = 50
# A call takes 1-10 ms here even on the slowest, busiest machine; a stalled one takes 40 ms or
# more. The median is compared, so a few calls slowed down by other processes do not matter.
STALL_BOUND_S = 0.020


@pytest.fixture(scope="module")
def rest_server(impl, server_factory, model_stock, tmp_path_factory):
    root = tmp_path_factory.mktemp("keepalive")
    model_stock.install("a", root / "tiny", 1)
    flags = ["--model_name=tiny", f"--model_base_path={root}/tiny"]
    server = server_factory(impl, "keepalive", flags)
    server.version_dir = root / "tiny" / "1"
    return server


def _post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, dict]:
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_keep_alive_predicts_do_not_stall(rest_server) -> None:
    """50 sequential :predict calls on one connection: each well under the 40 ms stall."""
    batch = images(1, seed=31)
    body = json.dumps({"instances": batch.tolist()}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", rest_server.rest_port, timeout=30)
    try:
        for _ in range(3):  # the first calls open the connection and warm the server up
            assert _post(connection, "/v1/models/tiny:predict", body)[0] == 200
        sock = connection.sock
        latencies = []
        for _ in range(CALLS):
            start = time.perf_counter()
            status, reply = _post(connection, "/v1/models/tiny:predict", body)
            latencies.append(time.perf_counter() - start)
            assert status == 200, reply
        assert connection.sock is sock, "the server closed the keep-alive connection"
    finally:
        connection.close()
    expected = expected_scores(rest_server.version_dir, batch)
    np.testing.assert_allclose(reply["predictions"][0]["scores"], expected[0], rtol=1e-5)
    median = statistics.median(latencies)
    assert median < STALL_BOUND_S, (
        f"median keep-alive :predict took {median * 1e3:.1f} ms (total {sum(latencies):.2f} s "
        f"for {CALLS} calls): the delayed-ACK stall"
    )


def test_errors_keep_the_connection(rest_server) -> None:
    """Error answers (bad JSON, unknown model, another method) leave the connection usable."""
    connection = http.client.HTTPConnection("127.0.0.1", rest_server.rest_port, timeout=30)
    try:
        status, reply = _post(connection, "/v1/models/tiny:predict", b"{not json")
        assert status == 400 and "error" in reply
        status, reply = _post(connection, "/v1/models/missing:predict", b'{"instances": [1]}')
        assert status == 404 and "error" in reply
        connection.request("PUT", "/v1/models/tiny:predict", b"{}")
        response = connection.getresponse()
        assert response.status == 400  # http_rest_api_handler.cc: the default status
        assert json.loads(response.read()) == {
            "error": "Malformed request: PUT /v1/models/tiny:predict"
        }
        connection.request("GET", "/v1/models/tiny")
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        connection.close()


def test_concurrent_keep_alive_clients(rest_server) -> None:
    """Eight connections, each with sequential calls: every answer is the caller's own."""
    inputs = [images(1 + i % 3, seed=40 + i) for i in range(8)]
    results: list = [None] * len(inputs)

    def client(i: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", rest_server.rest_port, timeout=60)
        body = json.dumps({"inputs": inputs[i].tolist()}).encode()
        try:
            results[i] = [_post(connection, "/v1/models/tiny:predict", body) for _ in range(5)]
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    expected = expected_scores(rest_server.version_dir, np.concatenate(inputs))
    offsets = np.cumsum([0] + [len(x) for x in inputs])
    for i, calls in enumerate(results):
        assert calls is not None, f"client {i} did not finish"
        for status, reply in calls:
            assert status == 200, reply
            mine = expected[offsets[i] : offsets[i + 1]]
            np.testing.assert_allclose(reply["outputs"]["scores"], mine, rtol=1e-5)


def test_rest_api_timeout_is_the_call_deadline(impl, server_factory, model_stock, tmp_path):
    """--rest_api_timeout_in_ms=1: a call whose body alone takes longer to decode gets 504 with a
    JSON error; a GET on the same connection is still answered."""
    if impl != "fdl":
        why = "TF Serving times the Session run, not the decoding; the 504 body is ours"
        pytest.skip(f"platform: {why}")
    model_stock.install("a", tmp_path / "tiny", 1)
    flags = [
        "--model_name=tiny",
        f"--model_base_path={tmp_path}/tiny",
        "--rest_api_timeout_in_ms=1",
    ]
    server = server_factory(impl, "deadline", flags)
    body = json.dumps({"instances": images(2000, seed=7).tolist()}).encode()  # about 400 KB
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    try:
        status, reply = _post(connection, "/v1/models/tiny:predict", body)
        assert status == 504, reply
        assert "rest_api_timeout_in_ms" in reply["error"]
        connection.request("GET", "/v1/models/tiny")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
