#!/usr/bin/env bash
# Validate the deployment files without a Docker engine or a cluster: hadolint on the Dockerfile,
# the Compose Specification schema for deploy/compose*.yaml, TF Serving's config protos, and every
# Kubernetes manifest and kustomize build against the Kubernetes schemas plus the pod policy.
# Usage: bash scripts/lint-deploy.sh [dockerfile|compose|serving-config|k8s ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ]; then
  PYTHON=.venv/bin/python
fi
exec "$PYTHON" -m deploy.lint "$@"
