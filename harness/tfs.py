"""TF Serving conformance helpers: our model server or the real ``tensorflow_model_server``
(``FDL_TFS_BINARY``) on free ports, and the gRPC requests, metrics and CLI runs the tests make."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from harness.models import sample_images
from harness.procs import Process, free_port, grpc_ready, wait_for
from harness.prometheus import scrape, total

TFS_BINARY = os.environ.get("FDL_TFS_BINARY", "")
SHAPE = (8, 8, 1)
CLASSES = 4
MAX_MESSAGE = 64 * 1024 * 1024
SERVER = [sys.executable, "-m", "serving"]
BATCH_COUNT = ":tensorflow:serving:batching_session:processed_batch_size_count"
# Where the API conformance server (tests/serving/conftest.py's api_server) serves Prometheus.
METRICS_PATH = "/monitoring/prometheus/metrics"


@dataclass
class ModelStock:
    """Version folders built once; tests copy them into their own model repositories."""

    root: Path
    versions: dict[str, Path] = field(default_factory=dict)

    def install(self, kind: str, base_path: Path, version: int) -> Path:
        target = base_path / str(version)
        tmp = base_path / f".tmp-{version}"
        shutil.copytree(self.versions[kind], tmp)
        tmp.rename(target)  # appear atomically, as training publishes
        return target


def expected_scores(version_dir: Path, images: np.ndarray) -> np.ndarray:
    """The signature called in-process (TF's own loader), to compare server answers with."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    result = loaded.signatures["serving_default"](images=tf.constant(images))
    return result["scores"].numpy()


def server_argv(impl: str) -> list[str]:
    if impl == "tfs":
        return [TFS_BINARY]
    return [sys.executable, "-m", "serving"]


@dataclass
class Server:
    impl: str
    process: Process
    port: int
    rest_port: int
    channel: grpc.Channel

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def prediction(self):
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def models(self):
        from tensorflow_serving.apis import model_service_pb2_grpc

        return model_service_pb2_grpc.ModelServiceStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.process.stop()


def start_server(
    impl: str, name: str, log_dir: Path, flags: Sequence[str], timeout: float = 90
) -> Server:
    port, rest_port = free_port(), free_port()
    argv = [*server_argv(impl), f"--port={port}", f"--rest_api_port={rest_port}", *flags]
    process = Process(f"{name}-{impl}", argv, log_dir)
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ],
    )

    try:
        wait_for(
            lambda: grpc_ready(channel), timeout, f"{name} model server", check=process.ensure_alive
        )
    except BaseException:
        channel.close()
        process.stop()
        raise
    return Server(impl, process, port, rest_port, channel)


def model_config(models: dict[str, Path], extra: dict[str, str] | None = None) -> str:
    """ModelServerConfig text; ``extra`` adds text inside a model's config block."""
    blocks = []
    for name, path in models.items():
        blocks.append(
            f'  config {{\n    name: "{name}"\n    base_path: "{path}"\n'
            f'    model_platform: "tensorflow"\n{(extra or {}).get(name, "")}  }}\n'
        )
    return "model_config_list {\n" + "".join(blocks) + "}\n"


def images(batch: int, seed: int = 0) -> np.ndarray:
    return sample_images(SHAPE, batch, seed)


def predict_request(
    model: str,
    array: np.ndarray,
    version: int | None = None,
    label: str | None = None,
    content: bool = True,
):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    if content:
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(array))
    else:
        proto = request.inputs["images"]
        proto.dtype = tf.uint8.as_datatype_enum
        for s in array.shape:
            proto.tensor_shape.dim.add(size=s)
        proto.int_val.extend(array.ravel().tolist())
    return request


def scores_of(response) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(response.outputs["scores"])


def statuses(server: Server, name: str) -> dict[int, tuple[int, str]]:
    """Version -> (state, error message) of ``name`` (empty when the server has no such model)."""
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    try:
        response = server.models().GetModelStatus(request, timeout=10)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return {}
        raise
    return {s.version: (s.state, s.status.error_message) for s in response.model_version_status}


def served_version(server: Server, name: str) -> int:
    response = server.prediction().Predict(predict_request(name, images(1)), timeout=30)
    return response.model_spec.version.value


def wait_served(server: Server, name: str, version: int, timeout: float = 60) -> None:
    def probe() -> bool:
        return served_version(server, name) == version

    wait_for(probe, timeout, f"{name} version {version} served", check=server.process.ensure_alive)


def rpc_code(call: Callable[[], object]) -> grpc.StatusCode:
    """The status code of a gRPC call (``OK`` when it succeeds)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def rpc_error(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a gRPC call that must fail."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details()
    raise AssertionError("the call succeeded; it should have failed")


def rest_json(url: str, body: object | None = None) -> tuple[int, Any]:
    """GET ``url`` (POST ``body`` as JSON when given): the status and the JSON answer (its text
    when it is not JSON), error statuses included."""
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as reply:
            raw = reply.read()
            status = reply.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def run_server_cli(*flags: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Our model server's command line run to its end (start-up errors)."""
    return subprocess.run(
        [*SERVER, *flags], capture_output=True, text=True, timeout=timeout, check=False
    )


def concurrently(count: int, call: Callable[[int], Any]) -> list:
    """``call(i)`` for ``i`` < ``count`` in threads released together; results or RpcErrors."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except grpc.RpcError as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of the server's samples ``name`` with ``labels`` at /metrics (0 if none)."""
    return total(scrape(f"{server.rest}/metrics"), name, **labels)
