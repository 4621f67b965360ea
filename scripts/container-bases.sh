#!/usr/bin/env bash
# The base images the Dockerfile and deploy/compose.yaml name, under those exact names: each is
# used when present, else pulled, else (no registry reachable) replaced by a stand-in built from
# Debian packages (mmdebstrap) and PyPI wheels (deploy/standins/*.Containerfile).
# Usage: bash scripts/container-bases.sh WORKDIR BASE...   with BASE among python, tensorflow,
# redis, flower (the last three build on python's). Called by scripts/test-containers.sh, which
# exports CONTAINERS_CONF and BUILD_OPTS_STR. FDL_CONTAINER_BASES=standin skips the pulls, =pull
# fails instead of building stand-ins; the default (auto) tries a pull first.
# Prints one line per base: its name, "real" or "stand-in", and the seconds it took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=$1
MODE=${FDL_CONTAINER_BASES:-auto}
MIRROR=${FDL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
read -r -a BUILD_OPTS <<<"${BUILD_OPTS_STR:---pull=never --format docker}"
# shellcheck source=scripts/network-retries.sh
source scripts/network-retries.sh

PYTHON_BASE=docker.io/library/python:3.11.13-slim-bookworm
declare -A IMAGE=(
  [python]=$PYTHON_BASE
  [tensorflow]=docker.io/tensorflow/tensorflow:2.21.0
  [redis]=docker.io/library/redis:7.4.2-alpine
  [flower]=docker.io/mher/flower:2.0.1
)

have_real() {
  local image=$1
  if podman image exists "$image"; then
    # A stand-in built by an earlier run is rebuilt: CI proves the stand-ins build, every time.
    [ "$(podman image inspect --format '{{index .Labels "fdl.standin"}}' "$image")" != true ]
    return
  fi
  [ "$MODE" != standin ] && timeout 120 podman pull -q "$image" >/dev/null 2>&1
}

python_standin() {
  # Debian bookworm's Python 3.11 with venv; no docs, man pages or locales (the slim image has none).
  with_network_retries "$WORK/standin-python.log" mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$WORK/python-base.tar" "$MIRROR" || { tail -30 "$WORK/standin-python.log"; return 1; }
  podman import --quiet --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL fdl.standin=true' "$WORK/python-base.tar" "$PYTHON_BASE" >/dev/null
  rm -f "$WORK/python-base.tar"
}

standin() {
  local image=$1 file=$2 log=$WORK/standin-$(basename "$2").log
  with_network_retries "$log" podman build "${BUILD_OPTS[@]}" --label fdl.standin=true \
    --build-arg "BASE=$PYTHON_BASE" -f "$file" -t "$image" deploy/standins || {
    tail -30 "$log"; return 1; }
}

report() { printf 'base %-46s %-9s %4d s\n' "$1" "$2" "$3"; }

for base in "${@:2}"; do
  image=${IMAGE[$base]}
  t0=$SECONDS
  if have_real "$image"; then
    report "$image" real $((SECONDS - t0))
    continue
  fi
  [ "$MODE" != pull ] || { echo "cannot pull $image"; exit 1; }
  if [ "$base" = python ]; then
    python_standin
  else
    standin "$image" "deploy/standins/$base.Containerfile"
  fi
  report "$image" stand-in $((SECONDS - t0))
done
