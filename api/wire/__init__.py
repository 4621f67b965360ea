"""TF Serving's wire messages, owned by the project (see tfs.proto); no TensorFlow needed."""

from api.wire import tfs_pb2

__all__ = ["tfs_pb2"]
