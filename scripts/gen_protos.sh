#!/usr/bin/env bash
# Regenerates the TensorFlow-free protobuf modules of fdl/wire/ from its vendored .proto files:
# tfs.proto (the TF Serving messages the gateway speaks) and serving_config.proto (the config
# files the model server and the deploy linter read).
set -euo pipefail
cd "$(dirname "$0")/../fdl/wire"
python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. tfs.proto serving_config.proto
