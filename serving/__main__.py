"""``fdl-model-server`` / ``python -m serving``: start the server, stop it on SIGTERM or SIGINT."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

# TF Serving ends at once on SIGTERM; we stop in order (drain, unload) but never for longer than
# this. Past it, the stacks of all threads go to stderr and the process exits with status 1.
SHUTDOWN_DEADLINE_S = 10.0


def main(argv: Sequence[str] | None = None) -> int:
    from fdl.grpc_tuning import tune_grpc
    from serving.flags import FlagError, parse_flags

    try:
        args = parse_flags(sys.argv[1:] if argv is None else argv)
    except FlagError as error:
        print(error.code, file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tune_grpc()
    # Hand the GIL over sooner than the 5 ms default: request threads, batch threads and gRPC's
    # own threads take turns, and a long switch interval shows up directly as latency.
    sys.setswitchinterval(0.0005)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("serving")

    if args.version:
        import tensorflow as tf

        print(f"TensorFlow ModelServer: fdl-model-server (compatible)\nTensorFlow Library: "
              f"{tf.__version__}")  # fmt: skip
        return 0

    stop = threading.Event()
    started = threading.Event()

    def on_signal(signum: int) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        if stop.is_set():
            return  # a second signal does not move the deadline
        faulthandler.dump_traceback_later(SHUTDOWN_DEADLINE_S, exit=True)
        stop.set()
        if not started.is_set():  # nothing served yet: no need to wait for the loads
            _exit(0)

    _watch_signals(on_signal)

    from serving.config_files import ConfigError
    from serving.errors import ServingError
    from serving.server import ModelServer

    server = None
    try:
        server = ModelServer(args)
        server.start()
        started.set()
    except (ConfigError, ServingError, OSError, ValueError) as error:
        message = str(error)
        if isinstance(error, ServingError):  # as absl prints a status (TF Serving's main.cc)
            message = f"{error.code.name}: {error.message}"
        log.error("Failed to start server. Error: %s", message)
        if server is not None:
            server.stop()
        _exit(1)
    stop.wait()
    server.stop()
    log.info("stopped")
    _exit(0)


def _watch_signals(on_signal: Callable[[int], None]) -> None:
    """Take SIGTERM and SIGINT on a thread of their own, whatever the other threads are doing.

    The signals are blocked in this thread before any other starts, so every thread (TensorFlow's
    and gRPC's included) inherits the mask and only ``sigwait`` receives them. A Python signal
    handler would instead wait for the main thread to run bytecode, which a thread blocked in a
    lock, or a signal delivered to another thread, can hold up indefinitely.
    """
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)

    def receive() -> None:
        while True:
            on_signal(signal.sigwait(signals))

    threading.Thread(target=receive, name="signals", daemon=True).start()


def _exit(code: int) -> NoReturn:
    """End the process once the server has stopped, without waiting for its worker threads.

    Interpreter shutdown would join every pool thread, and one may be in the middle of loading a
    large model or running a long request that nobody waits for any more.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
