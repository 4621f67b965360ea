"""gRPC settings our processes start with, before ``grpc`` is first imported.

gRPC's EventEngine client transport (the ``event_engine_client`` experiment) costs more CPU per
call on each side, and more round-trip latency, than the older transport for the small unary calls
our processes make (measurements: docs/serving.md, "gRPC transport"). So the model server, the
gateway and the benchmarks turn it off unless ``GRPC_EXPERIMENTS`` is already set, which always
wins.
"""

from __future__ import annotations

import os

DEFAULT_EXPERIMENTS = "-event_engine_client"
# TF Serving sets gRPC's send and receive limits to INT_MAX; the model server and the gateway's
# channel use the same.
MAX_MESSAGE_BYTES = 2**31 - 1


def tune_grpc() -> None:
    """Call before ``import grpc``: gRPC reads the variable once, when it starts."""
    os.environ.setdefault("GRPC_EXPERIMENTS", DEFAULT_EXPERIMENTS)
