"""The text-format configuration files TF Serving reads, parsed into protos.

``ConfigProto`` (``--tensorflow_session_config_file``) is TensorFlow's own message.

``ModelServerConfig`` comes from the official ``tensorflow_serving.config`` package. The pip
package does not ship ``BatchingParameters`` (session_bundle_config.proto) or
``MonitoringConfig`` (monitoring_config.proto); :mod:`fdl.wire` compiles them from
``fdl/wire/serving_config.proto`` (same names, field numbers and wrapper types), so their files
parse exactly as TF Serving's do, here and in ``make lint-deploy``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.config import model_server_config_pb2

from fdl.wire.serving_config_pb2 import BatchingParameters, MonitoringConfig

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# The largest configuration file read (TF Serving reads any); far beyond any real one.
MAX_CONFIG_BYTES = 64 * 1024 * 1024
MODEL_CONFIG = "model config file"


class ConfigError(ValueError):
    """A configuration file that cannot be read or parsed."""


# The flag that names each file, for the messages.
FLAGS = {
    MODEL_CONFIG: "--model_config_file",
    "batching parameters file": "--batching_parameters_file",
    "session config file": "--tensorflow_session_config_file",
    "monitoring config file": "--monitoring_config_file",
    "SSL config file": "--ssl_config_file",
}


def read_config_file(path: str | Path, what: str) -> bytes:
    """The bytes of the regular file at ``path``, at most :data:`MAX_CONFIG_BYTES`. Anything
    else (a FIFO, whose read would block for good; a directory; a device) is refused before it
    is opened, and again on what was opened, non-blocking, in case it was swapped meanwhile."""
    where = f"{what} {path} ({FLAGS.get(what, what)})"
    try:
        kind = _not_regular(os.stat(path).st_mode)
        if kind:
            raise ConfigError(f"cannot read {where}: it is {kind}, not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            kind = _not_regular(os.fstat(fd).st_mode)
            if kind:
                raise ConfigError(f"cannot read {where}: it is {kind}, not a regular file")
            chunks, size = [], 0
            while size <= MAX_CONFIG_BYTES and (chunk := os.read(fd, 1 << 20)):
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except ConfigError:
        raise
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        reason = getattr(error, "strerror", None) or error
        raise ConfigError(f"cannot read {where}: {reason}") from error
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"cannot read {where}: larger than {MAX_CONFIG_BYTES >> 20} MiB")
    return b"".join(chunks)


def _not_regular(mode: int) -> str:
    """What a file that is not a regular one is ("" for a regular file)."""
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


def parse_text_file(
    path: str | Path | None, message: Any, what: str, data: bytes | None = None
) -> Any:
    """``message`` filled from the text-format file at ``path`` (or from ``data``, its bytes
    read already); as it is (TF Serving's defaults) when ``path`` is empty."""
    if not path:
        return message
    if data is None:
        data = read_config_file(path, what)
    # As TF Serving, bytes that are not UTF-8 are refused only where a value needs text (a
    # name, a path), not in a comment: they are carried through as surrogates.
    text = data.decode(errors="surrogateescape")
    try:
        return text_format.Parse(text, message)
    except (text_format.ParseError, UnicodeError, ValueError) as error:
        # The parser quotes the line: its undecodable bytes are written as escapes, not logged.
        reason = str(error).encode(errors="backslashreplace").decode()
        raise ConfigError(f"cannot parse {what} {path}: {reason}") from error


def read_model_server_config(
    path: str | Path, data: bytes | None = None
) -> model_server_config_pb2.ModelServerConfig:
    """The parsed file (or ``data``, its bytes read already); what it asks for is checked when it
    is applied (:mod:`serving.config_rules`, TF Serving's checks and texts)."""
    config = parse_text_file(path, model_server_config_pb2.ModelServerConfig(), MODEL_CONFIG, data)
    if config.HasField("custom_model_config"):
        raise ConfigError(f"{path}: custom_model_config is not supported; use model_config_list")
    return config


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    return config


def read_batching_parameters(path: str | Path | None):
    """TF Serving's defaults where the file (or a field) is absent."""
    return parse_text_file(path, BatchingParameters(), "batching parameters file")


def session_config(
    path: str | Path | None,
    *,
    session_parallelism: int = 0,
    intra_op_parallelism: int = 0,
    inter_op_parallelism: int = 0,
    gpu_memory_fraction: float = 0.0,
) -> config_pb2.ConfigProto:
    """The ConfigProto every Session gets, as ``tensorflow_model_server`` builds it: the
    ``--tensorflow_session_config_file`` text, then the flags on top (they always set the thread
    counts and the GPU memory fraction, so a file cannot change those)."""
    config = parse_text_file(path, config_pb2.ConfigProto(), "session config file")
    config.gpu_options.per_process_gpu_memory_fraction = gpu_memory_fraction
    if intra_op_parallelism > 0 and inter_op_parallelism > 0 and session_parallelism > 0:
        raise ConfigError(
            "Either configure --tensorflow_session_parallelism or "
            "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
            "separately. You cannot configure all."
        )
    if intra_op_parallelism > 0 or inter_op_parallelism > 0:
        config.intra_op_parallelism_threads = intra_op_parallelism
        config.inter_op_parallelism_threads = inter_op_parallelism
    else:
        config.intra_op_parallelism_threads = session_parallelism
        config.inter_op_parallelism_threads = session_parallelism
    return config


def read_monitoring_config(path: str | Path | None):
    return parse_text_file(path, MonitoringConfig(), "monitoring config file")
