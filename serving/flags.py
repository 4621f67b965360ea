"""Command-line flags with ``tensorflow_model_server``'s names, defaults and meanings.

Both ``--flag=value`` (TF Serving's form) and ``--flag value`` are accepted; a boolean flag given
alone means true. Flags of the real binary that this server does not implement, and unknown flags,
stop the server at start-up with a clear message.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable, Sequence

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}

# tensorflow_model_server flags that are recognised but not implemented here.
UNSUPPORTED = {
    "use_alts_credentials": "ALTS credentials",
    "platform_config_file": "platform configs",
    "prefer_tflite_model": "TF Lite",
    "num_tflite_pools": "TF Lite",
    "num_tflite_interpreters_per_pool": "TF Lite",
    "xla_cpu_compilation_enabled": "XLA",
    "xla_gpu_compilation_enabled": "XLA",
    "enable_profiler": "the profiler service",
    "thread_pool_factory_config_file": "thread pool factories",
    "mixed_precision": "mixed precision",
    "skip_initialize_tpu": "TPUs",
    "response_tensor_content_threshold": None,
}


class FlagError(SystemExit):
    pass


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: that listener is off); the socket calls would otherwise take
    the number modulo 65536, or refuse it only once every model has loaded."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {port}")
    return port


def thread_count(text: str) -> int:
    """A number of threads, 0 or more (0: the default); checked here, not once every model has
    loaded and the pool refuses it."""
    count = int(text)
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (the default) or more threads, got {count}")
    return count


# Bounds of the REST limits (fdl-model-server's own flags): a body or the bodies held at once at
# most 1 TiB, request line and headers from 1 KiB (less refuses ordinary clients' headers) to
# 16 MiB, a time limit at most a day (a larger number overflowed the float of its seconds and
# stopped the server once its models had loaded); 0 turns each off. --rest_api_timeout_in_ms is
# TF Serving's own flag, an int32 there.
MAX_BODY_BYTES = 2**40
MIN_HEADER_BYTES, MAX_HEADER_BYTES = 1024, 16 * 1024 * 1024
MAX_TIMEOUT_MS = 86_400_000


def limit(low: int, high: int, unit: str) -> Callable[[str], int]:
    """A flag's parser: 0 (off) or a whole number from ``low`` to ``high`` ``unit``; checked
    here, where a negative number used to mean "off" and a huge one stopped the server late."""

    def parse(text: str) -> int:
        value = int(text)
        if value != 0 and not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected 0 (no limit) or {low} to {high} {unit}, got {text.strip()[:40]}"
            )
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value" for what int() refuses
    return parse


def whole_number(bits: int) -> Callable[[str], int]:
    """A flag's parser for a whole number that TF Serving's int32 or int64 flag holds, as its
    flag library refuses any other; a larger one here used to stop a poll thread or a load retry
    with ``OverflowError`` once the server ran (a poll interval of 10**20 seconds)."""
    high = 2 ** (bits - 1) - 1

    def parse(text: str) -> int:
        value = int(text)
        if not -high - 1 <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a {bits}-bit integer, at most {high}, got {text.strip()[:40]}"
            )
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value" for what int() refuses
    return parse


int32, int64 = whole_number(32), whole_number(64)


def bind_address(text: str) -> str:
    """A host name or IP address; an IPv6 literal may come in brackets (``[::1]``), which are
    removed: each listener adds what its own syntax needs."""
    host = text.strip()
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a host name or an IP address ([...] only around IPv6), got {text!r}"
            ) from None
        host = inner
    if not host:
        raise argparse.ArgumentTypeError("expected a host name or an IP address, got nothing")
    return host


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise FlagError(f"fdl-model-server: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fdl-model-server",
        description="TensorFlow Serving-compatible model server (tensorflow_model_server flags).",
        allow_abbrev=False,
    )

    def flag(name: str, kind: Callable[[str], object], default: object, text: str) -> None:
        if kind is bool:
            p.add_argument(
                f"--{name}", type=parse_bool, nargs="?", const=True, default=default, help=text
            )
        else:
            p.add_argument(f"--{name}", type=kind, default=default, help=text)

    flag("port", port_number, 8500, "gRPC port (0 disables gRPC)")
    # fdl-model-server only (TF Serving always listens on every interface): `fdl up` keeps the
    # unauthenticated model server on the loopback interface with it.
    flag("bind_address", bind_address, "0.0.0.0", "address --port and --rest_api_port listen on")
    flag("grpc_socket_path", str, "", "also serve gRPC on this UNIX socket path")
    flag("grpc_channel_arguments", str, "", "gRPC server arguments: key=value,key=value")
    flag("ssl_config_file", str, "", "ascii SSLConfig file: TLS for gRPC")
    flag("rest_api_port", port_number, 0, "HTTP/REST port (0 disables REST)")
    flag(
        "rest_api_num_threads",
        thread_count,
        0,
        "threads for REST calls off the event loop (0: 4 x CPUs)",
    )
    flag("rest_api_timeout_in_ms", int32, 30000, "deadline of one REST call; keep-alive idle time")
    flag("rest_api_enable_cors_support", bool, False, "CORS headers on REST responses")
    # fdl-model-server only (TF Serving reads any body, however large or slow): REST request
    # bodies are bounded in size and time, each and all at once, and headers in size and time
    # (uvicorn has no timeout for them, httptools no size limit; docs/serving.md, "The REST
    # front end").
    body_bytes, timeout_ms = limit(1, MAX_BODY_BYTES, "bytes"), limit(1, MAX_TIMEOUT_MS, "ms")
    flag(
        "rest_api_max_body_bytes", body_bytes, 256 * 1024 * 1024, "largest REST body (0: no limit)"
    )
    flag(
        "rest_api_body_timeout_in_ms", timeout_ms, 60_000, "time a REST body may take (0: no limit)"
    )
    flag(
        "rest_api_max_body_bytes_in_flight",
        body_bytes,
        1024 * 1024 * 1024,
        "bytes of REST bodies held at once; 503 past it (0: no limit)",
    )
    flag(
        "rest_api_max_header_bytes",
        limit(MIN_HEADER_BYTES, MAX_HEADER_BYTES, "bytes"),
        64 * 1024,
        "largest REST request line + headers; 431 past it (0: no limit; h11's 16 KiB with CORS)",
    )
    flag(
        "rest_api_header_timeout_in_ms",
        timeout_ms,
        10_000,
        "time REST request headers may take; 408 past it (0: no limit)",
    )
    flag("enable_batching", bool, False, "merge concurrent Predict calls into one run")
    flag("batching_parameters_file", str, "", "ascii BatchingParameters file")
    flag(
        "enable_per_model_batching_parameters",
        bool,
        False,
        "batching_params.pbtxt of each version instead of the file's (threads stay shared)",
    )
    flag("allow_version_labels_for_unavailable_models", bool, False, "labels may point anywhere")
    flag("model_config_file", str, "", "ascii ModelServerConfig file")
    flag("model_config_file_poll_wait_seconds", int32, 0, "0: read the config file once")
    flag("model_name", str, "default", "model name (without --model_config_file)")
    flag("model_base_path", str, "", "model base path (without --model_config_file)")
    flag("num_load_threads", int32, 0, "threads loading versions (0 means one)")
    flag("num_unload_threads", int32, 0, "accepted for compatibility")
    flag("max_num_load_retries", int32, 5, "retries after a failed load")
    flag("load_retry_interval_micros", int64, 60_000_000, "wait between load retries")
    flag("file_system_poll_wait_seconds", int32, 1, "version poll interval (0: once)")
    flag("tensorflow_session_parallelism", int64, 0, "threads for each Session (0: auto)")
    flag("tensorflow_intra_op_parallelism", int64, 0, "intra-op threads (0: auto)")
    flag("tensorflow_inter_op_parallelism", int64, 0, "inter-op threads (0: auto)")
    flag("tensorflow_session_config_file", str, "", "ascii ConfigProto file for every Session")
    flag("per_process_gpu_memory_fraction", float, 0.0, "GPU memory per process (0: TF's default)")
    flag("saved_model_tags", str, "", "comma-separated MetaGraph tags to load (empty: serve)")
    flag(
        "enable_serialization_as_tensor_content",
        bool,
        False,
        "Predict outputs in tensor_content instead of typed fields",
    )
    flag("flush_filesystem_caches", bool, True, "accepted; this server keeps no file caches")
    flag(
        "remove_unused_fields_from_bundle_metagraph",
        bool,
        True,
        "accepted; the MetaGraphDef is not kept after loading",
    )
    flag(
        "enable_signature_method_name_check",
        bool,
        False,
        "accepted; applies to Classify and Regress, which answer UNIMPLEMENTED here",
    )
    flag("grpc_max_threads", thread_count, 0, "gRPC worker threads (0: 8 x CPUs, at least 64)")
    flag("enable_model_warmup", bool, True, "replay assets.extra/tf_serving_warmup_requests")
    flag("num_request_iterations_for_warmup", int32, 1, "times each warmup record runs")
    flag("monitoring_config_file", str, "", "ascii MonitoringConfig file (Prometheus)")
    flag("enable_grpc_healthcheck_service", bool, False, "standard gRPC health service")
    flag("version", bool, False, "print the version and exit")
    return p


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    args, unknown = parser.parse_known_args(list(argv))
    for item in unknown:
        if not item.startswith("-"):
            raise FlagError(f"fdl-model-server: error: unexpected argument {item!r}")
        name = item.lstrip("-").split("=", 1)[0]
        if name in UNSUPPORTED:
            what = UNSUPPORTED[name] or "this option"
            raise FlagError(
                f"fdl-model-server: error: --{name} is a tensorflow_model_server flag that "
                f"fdl-model-server does not support ({what}); use the real binary for it"
            )
        raise FlagError(f"fdl-model-server: error: unknown flag {item!r} (see --help)")
    if not args.model_config_file and not args.model_base_path and not args.version:
        raise FlagError(
            "fdl-model-server: error: give --model_config_file, or --model_base_path "
            "(with --model_name)"
        )
    if args.port and args.port == args.rest_api_port:
        raise FlagError("fdl-model-server: error: --rest_api_port must differ from --port")
    if not args.port and not args.rest_api_port and not args.grpc_socket_path:
        raise FlagError(
            "fdl-model-server: error: --port and --rest_api_port are zero and there is no "
            "--grpc_socket_path: nothing to serve on"
        )
    return args
