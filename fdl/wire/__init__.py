"""The project's protobuf messages, compiled from the vendored .proto files here by
``make protos``; no TensorFlow needed.

``tfs_pb2``: the TF Serving gRPC messages the gateway speaks. ``serving_config_pb2``: the model
server's batching, monitoring and SSL config files, read by the server and by the deploy linter.
"""

from fdl.wire import serving_config_pb2, tfs_pb2

__all__ = ["serving_config_pb2", "tfs_pb2"]
