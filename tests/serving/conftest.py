"""Fixtures for the model-server conformance suite.

Models are built once per session by :mod:`tests.support.models`. ``start_server`` starts either
our server or, with ``FDL_TFS_BINARY`` set, the real ``tensorflow_model_server``; tests that take
the ``impl`` fixture run against both, and the real-binary runs are skipped (with the reason) when
no binary is given.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.support.procs import Process, free_port, grpc_ready, wait_for

TFS_BINARY = os.environ.get("FDL_TFS_BINARY", "")
SHAPE = (8, 8, 1)
CLASSES = 4
MAX_MESSAGE = 64 * 1024 * 1024


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


@pytest.fixture(scope="session")
def model_stock(tmp_path_factory: pytest.TempPathFactory) -> ModelStock:
    from tests.support.models import build_test_model

    root = tmp_path_factory.mktemp("stock")
    stock = ModelStock(root)
    for kind, seed, warmup in (("a", 0, 2), ("b", 1, 0), ("c", 2, 0)):
        stock.versions[kind] = build_test_model(
            root / kind, input_shape=SHAPE, num_classes=CLASSES, seed=seed,
            warmup_requests=warmup, model_name="tiny",
        )  # fmt: skip
    broken = root / "broken"
    shutil.copytree(stock.versions["b"], broken)
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    stock.versions["broken"] = broken
    return stock


def expected_scores(version_dir: Path, images: np.ndarray) -> np.ndarray:
    """The signature called in-process (TF's own loader), to compare server answers with."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    result = loaded.signatures["serving_default"](images=tf.constant(images))
    return result["scores"].numpy()


@pytest.fixture(params=["fdl", "tfs"], scope="module")
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "tfs" and not TFS_BINARY:
        pytest.skip("FDL_TFS_BINARY is not set: no real tensorflow_model_server to compare with")
    return request.param


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


@pytest.fixture(scope="module")
def server_factory(logs_dir: Path) -> Iterator:
    started: list[Server] = []

    def factory(impl: str, name: str, flags: Sequence[str], timeout: float = 90) -> Server:
        server = start_server(impl, name, logs_dir, flags, timeout)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


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
    from tests.support.models import sample_images

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
