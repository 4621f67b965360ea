#!/usr/bin/env bash
# Regenerates the gateway's TensorFlow-free protobuf module from api/wire/tfs.proto.
set -euo pipefail
cd "$(dirname "$0")/../api/wire"
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. tfs.proto
