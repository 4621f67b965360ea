"""The model server process: builds the data plane, polls the config, starts the front ends.

Only :mod:`serving.__main__` imports this module; the front ends receive the
:class:`~serving.dataplane.DataPlane` and never import it back.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import threading
from pathlib import Path

from tensorflow_serving.config import model_server_config_pb2

from serving.batching_config import Batching, BatchingConfig
from serving.config_files import (
    DEFAULT_PROMETHEUS_PATH,
    MODEL_CONFIG,
    ConfigError,
    read_batching_parameters,
    read_config_file,
    read_model_server_config,
    read_monitoring_config,
    session_config,
    single_model_config,
)
from serving.dataplane import DataPlane
from serving.errors import ServingError
from serving.event_loop import LoopThread
from serving.manager import ManagerOptions, ModelManager
from serving.metrics import Metrics
from serving.protocol.grpc.server import GrpcFrontEnd
from serving.protocol.rest.server import RestFrontEnd
from serving.servable import SERVE_TAG

log = logging.getLogger("serving.server")


def saved_model_tags(text: str) -> tuple[str, ...]:
    """``--saved_model_tags``: comma-separated; none given means ``serve``, as in TF Serving."""
    tags = tuple(sorted({tag.strip() for tag in text.split(",") if tag.strip()}))
    return tags or (SERVE_TAG,)


class ModelServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.metrics = Metrics()
        self.loop = LoopThread()
        batching = None
        if args.enable_batching:
            params = read_batching_parameters(args.batching_parameters_file or None)
            config = BatchingConfig.from_proto(params, observer=self.metrics)
            batching = Batching(config, self.loop.loop)
        monitoring = read_monitoring_config(args.monitoring_config_file or None)
        prometheus = monitoring.prometheus_config
        metrics_path = (prometheus.path or DEFAULT_PROMETHEUS_PATH) if prometheus.enable else None
        config_proto = session_config(
            args.tensorflow_session_config_file or None,
            session_parallelism=args.tensorflow_session_parallelism,
            intra_op_parallelism=args.tensorflow_intra_op_parallelism,
            inter_op_parallelism=args.tensorflow_inter_op_parallelism,
            gpu_memory_fraction=args.per_process_gpu_memory_fraction,
        )
        manager = ModelManager(
            ManagerOptions(
                max_num_load_retries=max(0, args.max_num_load_retries),
                # An int64 of microseconds may exceed the longest wait a timer takes.
                load_retry_interval_s=min(
                    max(0.0, args.load_retry_interval_micros / 1e6), threading.TIMEOUT_MAX
                ),
                enable_warmup=args.enable_model_warmup,
                warmup_iterations=max(1, args.num_request_iterations_for_warmup),
                allow_labels_for_unavailable=args.allow_version_labels_for_unavailable_models,
                num_load_threads=max(1, args.num_load_threads),
                session_config=config_proto,
                tags=saved_model_tags(args.saved_model_tags),
                batching=batching,
                per_model_batching=args.enable_per_model_batching_parameters,
                on_run=self.metrics.record_run,
                on_warmup=self.metrics.record_warmup,
                on_load=self.metrics.record_load,
            )
        )
        self.data_plane = DataPlane(
            manager,
            self.metrics,
            metrics_path,
            tensor_content=bool(args.enable_serialization_as_tensor_content),
        )
        self._stop = threading.Event()
        self._config_text: bytes | None = None
        self._config_ok = False
        # The config object the file was last applied as (compared by identity with the served).
        self._file_config: model_server_config_pb2.ModelServerConfig | None = None
        self._last_config_error = ""
        self._threads: list[threading.Thread] = []
        self._grpc: GrpcFrontEnd | None = None
        self._rest: RestFrontEnd | None = None

    # --- configuration ----------------------------------------------------------------------
    def _initial_config(self) -> model_server_config_pb2.ModelServerConfig:
        if self.args.model_config_file:
            path = Path(self.args.model_config_file)
            self._config_text = read_config_file(path, MODEL_CONFIG)  # a FIFO is never waited on
            return read_model_server_config(path, self._config_text)
        return single_model_config(self.args.model_name, self.args.model_base_path)

    def _poll_config_file(self) -> None:
        path = Path(self.args.model_config_file)
        try:
            text = read_config_file(
                path, MODEL_CONFIG
            )  # bytes: the parse refuses what is not UTF-8
        except ConfigError as error:
            log.error("%s", error)
            return
        # As TF Serving's poll, which compares the file with the config served now: a
        # ReloadConfig since the last poll (e.g. from a gateway that then died) is undone by the
        # file even when the file's text is the one read last time.
        served = self.data_plane.config
        if text == self._config_text and self._config_ok and served is self._file_config:
            return
        self._config_text = text
        try:
            config = read_model_server_config(path, text)
            if served is None or config != served:
                self.data_plane.reload(config)
            self._file_config = self.data_plane.config
            self._config_ok = True
            log.info("model config file %s applied", path)
        except (ConfigError, ServingError) as error:
            self._config_ok = False
            message = f"model config file {path} not applied: {error}"
            if message != self._last_config_error:  # retried every poll; logged once
                log.error("%s", message)
            self._last_config_error = message
            return
        self._last_config_error = ""

    def _loop(self, interval: float, body: callable) -> None:  # type: ignore[valid-type]
        while not self._stop.wait(interval):
            try:
                body()
            except Exception:
                log.exception("poll failed")

    # --- start and stop ---------------------------------------------------------------------
    def start(self) -> None:
        config = self._initial_config()
        self.data_plane.load(config)
        self._config_ok = True
        self._file_config = self.data_plane.config
        # TensorFlow leaves millions of long-lived Python objects; moving them out of the
        # collector's reach keeps full collections (and latency spikes) short while serving.
        gc.freeze()
        if self.args.file_system_poll_wait_seconds > 0:
            poll = self.data_plane.manager.poll
            self._spawn("fs-poll", self.args.file_system_poll_wait_seconds, poll)
        if self.args.model_config_file and self.args.model_config_file_poll_wait_seconds > 0:
            self._spawn(
                "config-poll",
                self.args.model_config_file_poll_wait_seconds,
                self._poll_config_file,
            )
        if self.args.port or self.args.grpc_socket_path:
            self._start_grpc(self.args.port)
        if self.args.rest_api_port:
            self._rest = RestFrontEnd(
                self.data_plane,
                self.loop,
                bind_address=self.args.bind_address,
                num_threads=self.args.rest_api_num_threads,
                timeout_ms=self.args.rest_api_timeout_in_ms,
                cors=bool(self.args.rest_api_enable_cors_support),
                max_body_bytes=self.args.rest_api_max_body_bytes,
                body_timeout_ms=self.args.rest_api_body_timeout_in_ms,
                max_body_bytes_in_flight=self.args.rest_api_max_body_bytes_in_flight,
                max_header_bytes=self.args.rest_api_max_header_bytes,
                header_timeout_ms=self.args.rest_api_header_timeout_in_ms,
            )
            self._rest.start(self.args.rest_api_port)
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.args.rest_api_port)

    def _spawn(self, name: str, interval: float, body: callable) -> None:  # type: ignore[valid-type]
        thread = threading.Thread(target=self._loop, args=(interval, body), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_grpc(self, port: int) -> None:
        workers = self.args.grpc_max_threads or max(64, 8 * (os.cpu_count() or 4))
        front = GrpcFrontEnd(
            self.data_plane,
            self.loop,
            workers=workers,
            health_service=self.args.enable_grpc_healthcheck_service,
            bind_address=self.args.bind_address,
            channel_arguments=self.args.grpc_channel_arguments,
            ssl_config_file=self.args.ssl_config_file,
            socket_path=self.args.grpc_socket_path,
        )
        self._grpc = front
        front.start(port)

    def stop(self) -> None:
        self._stop.set()
        if self._grpc is not None:
            self._grpc.stop(grace=2)
        if self._rest is not None:
            self._rest.stop(grace=2)
        self.data_plane.manager.stop()
        self.loop.stop()
