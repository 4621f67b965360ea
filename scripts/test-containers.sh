#!/usr/bin/env bash
# Build every image and run the shipped compose stack end to end, inside containers, with podman
# (no Docker daemon, no registry needed). Steps:
#   1. install podman & co. with apt-get when missing (CI starts on a fresh machine);
#   2. the base images: pulled when a registry answers, else stand-ins built from Debian packages
#      (scripts/container-bases.sh) and tagged with the exact FROM / image: names;
#   3. build the Dockerfile targets gateway, worker (CPU base) and model-server, timed, and stop
#      a container of each 0.2 s after its start: it must end at once (tini as PID 1), and run
#      the gateway and worker images under another init (tini not PID 1): no warning;
#   4. start deploy/compose.yaml + deploy/compose.cpu.yaml + deploy/compose.model-server.yaml
#      (the one swap: our model server for tensorflow/serving) with podman-compose, read-only
#      roots as Docker makes them (only the tmpfs the files declare is writable);
#   5. copy MNIST into the worker's data volume and run scripts/containers_e2e.py against the
#      published gateway port (and Redis's password and the secrets' reach from inside the stack);
#      print image sizes and build times; remove the stack.
# Usage: bash scripts/test-containers.sh        (make test-containers)
# Environment: FDL_TEST_DATA_DIR (default ../shared/data), FDL_CONTAINER_BASES=standin|pull|auto,
# FDL_CONTAINERS_KEEP=1 leaves the stack running for a look (remove it with the printed command).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VERSION=${FDL_VERSION:-0.1.0}
DATA=${FDL_TEST_DATA_DIR:-$ROOT/../shared/data}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
PROJECT=fdl-ci-$$
WORK=$(mktemp -d /tmp/fdl-containers.XXXXXX)
START=$SECONDS

log() { printf '\n== %s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }

[ -f "$DATA/mnist/t10k-images-idx3-ubyte.gz" ] || {
  echo "no MNIST under $DATA/mnist (set FDL_TEST_DATA_DIR)"; exit 2; }

# ---------------------------------------------------------------- 1. tools
missing=()
for tool in podman mmdebstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
# podman's --init (compose `init: true`) runs catatonit.
[ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing podman, buildah, mmdebstrap, runc, netavark, catatonit (missing: ${missing[*]})"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q -o DPkg::Lock::Timeout=600 \
    podman buildah mmdebstrap runc containernetworking-plugins netavark aardvark-dns catatonit
fi
# One engine configuration for every podman call here, podman-compose's included: runc (crun
# fails on hybrid cgroup hosts) and ulimits within the host's hard limits (podman's defaults,
# nofile 1048576, are above them on CI machines, and the container cannot start).
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] || [ "$nofile" -gt 16384 ] && nofile=16384
[ "$nproc" = unlimited ] || [ "$nproc" -gt 16384 ] && nproc=16384
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$WORK/containers.conf
# A TLS-intercepting proxy's CA (CI sandboxes) lives in the host's bundle: lend it to the RUN
# steps of the Debian-based builds (a bind mount: nothing of it is committed to an image).
BUILD_OPTS=(--pull=never --format docker)
CA=${PIP_CERT:-${SSL_CERT_FILE:-}}
if [ -n "$CA" ] && [ -f "$CA" ]; then
  BUILD_OPTS+=(-v "$CA:/etc/ssl/certs/ca-certificates.crt:ro")
fi
export BUILD_OPTS_STR="${BUILD_OPTS[*]}"
# shellcheck source=scripts/network-retries.sh
source scripts/network-retries.sh

log "podman-compose into $WORK/venv"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "podman-compose>=1.6,<2"

# ---------------------------------------------------------------- 2. bases and 3. targets
# In parallel where one does not need the other: the TensorFlow base (mostly a 570 MB download)
# beside the other stand-ins and the gateway; the worker beside the model server.
build() {
  local image=$1 t0=$SECONDS log=$WORK/build-${1//[\/:]/_}.log
  shift
  log "building $image"
  with_network_retries "$log" podman build "${BUILD_OPTS[@]}" -t "$image" "$@" . || {
    tail -40 "$log"; echo "FAILED: building $image"; return 1; }
  echo "$image $((SECONDS - t0))" >>"$WORK/build-times.txt"
}
log "base images"
bash scripts/container-bases.sh "$WORK" python | tee "$WORK/bases.txt"
bash scripts/container-bases.sh "$WORK" tensorflow >"$WORK/bases-tf.txt" &
tensorflow=$!
bash scripts/container-bases.sh "$WORK" redis flower >"$WORK/bases-rest.txt" &
others=$!
build "fdl-serve/gateway:$VERSION" --target gateway
# Each background step's report (and, on failure, the tail of its log) is printed before any
# failure ends the script.
failed=
wait "$others" || failed+=" redis/flower"
wait "$tensorflow" || failed+=" tensorflow"
cat "$WORK/bases-tf.txt" "$WORK/bases-rest.txt" | tee -a "$WORK/bases.txt"
[ -z "$failed" ] || { echo "FAILED: base images:$failed"; exit 1; }
build "fdl-serve/worker-cpu:$VERSION" --target worker \
  --build-arg TENSORFLOW_IMAGE=tensorflow/tensorflow:2.21.0 &
worker=$!
build "fdl-serve/model-server:$VERSION" --target model-server || failed+=" model-server"
wait "$worker" || failed+=" worker"
[ -z "$failed" ] || { echo "FAILED: images:$failed"; exit 1; }

# PID 1 is tini in every image: a SIGTERM 0.2 s after the start (before uvicorn, Celery or the
# model server take the signal) ends the container at once, with the program's status or 143. A
# program that is PID 1 itself has the kernel drop it, and `podman stop` waits for its timeout,
# then SIGKILLs (137); the worker meanwhile took a job from the queue.
stops_at_once() {
  local image=$1 name=fdl-ci-stop-$$ t0 ms code
  podman run -d --name "$name" -e FDL_REDIS_URL=redis://127.0.0.1:9/0 "$image" \
    >"$WORK/stop.log" 2>&1 || { cat "$WORK/stop.log"; return 1; }
  sleep 0.2
  t0=${EPOCHREALTIME/./}
  podman stop -t 20 "$name" >>"$WORK/stop.log" 2>&1
  ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
  code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
  podman rm -f "$name" >/dev/null 2>&1
  printf '   stopped 0.2 s after its start: %-34s in %5d ms, status %s\n' "$image" "$ms" "$code"
  if [ "$ms" -ge 5000 ] || { [ "$code" != 0 ] && [ "$code" != 143 ]; }; then
    echo "FAILED: $image did not end at once on SIGTERM (no init as PID 1?)"
    return 1
  fi
}
log "SIGTERM right after the start"
for image in gateway worker-cpu model-server; do stops_at_once "fdl-serve/$image:$VERSION"; done

# Where tini is not PID 1 (Kubernetes' serving pod shares the pause container's PID namespace
# with its model-config init container, our gateway image; `docker run --init`), `tini -s` runs
# the program without warning that zombie reaping won't work.
for image in gateway worker-cpu; do
  out=$(podman run --rm --init "fdl-serve/$image:$VERSION" python -c 'import os; print("pid", os.getpid())' 2>&1)
  if ! grep -q '^pid [0-9]' <<<"$out" || grep -q 'not running as PID 1' <<<"$out"; then
    printf '%s\nFAILED: fdl-serve/%s under another init\n' "$out" "$image"
    exit 1
  fi
  echo "   fdl-serve/$image:$VERSION runs quietly with tini not PID 1 ($(grep '^pid' <<<"$out"))"
done

# ---------------------------------------------------------------- 4. the stack
free_port() { "$PYTHON" -c 'import portpicker; print(portpicker.pick_unused_port())'; }
token() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
# The secrets: the Redis password in the environment (as deploy/.env would hold it), the admin key
# in a file for the gateway's compose secret, readable by its uid 10001 inside $WORK (mode 0700).
export FDL_REDIS_PASSWORD
FDL_REDIS_PASSWORD=$(token)$(token)
ADMIN_KEY="ci-$(token)"
export FDL_SECRETS_DIR=$WORK/secrets
mkdir -m 700 "$FDL_SECRETS_DIR"
printf '%s\n' "$ADMIN_KEY" >"$FDL_SECRETS_DIR/api-keys"
chmod 644 "$FDL_SECRETS_DIR/api-keys"
GATEWAY_PORT=$(free_port)
export FDL_GATEWAY_PUBLISH=127.0.0.1:$GATEWAY_PORT
export FDL_FLOWER_PUBLISH=127.0.0.1:$(free_port)
export FDL_VERSION=$VERSION
# --read-only-tmpfs=false: podman's read-only root otherwise comes with writable /tmp, /var/tmp and
# /run; Docker's (`read_only: true`) has only the tmpfs the compose file declares.
COMPOSE=("$WORK/venv/bin/podman-compose" --podman-run-args=--read-only-tmpfs=false
  -p "$PROJECT" -f deploy/compose.yaml -f deploy/compose.cpu.yaml
  -f deploy/compose.model-server.yaml)
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    for service in model-config serving gateway worker redis flower; do
      echo "---- logs: $service"
      podman logs --tail 40 "${PROJECT}_${service}_1" 2>&1 || true
    done
  fi
  if [ -n "${FDL_CONTAINERS_KEEP:-}" ]; then
    echo "left running; remove with: CONTAINERS_CONF=$CONTAINERS_CONF ${COMPOSE[*]} down -v"
  else
    "${COMPOSE[@]}" down -v -t 5 >"$WORK/down.log" 2>&1 || cat "$WORK/down.log"
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
log "starting the stack (project $PROJECT, gateway on 127.0.0.1:$GATEWAY_PORT)"
"${COMPOSE[@]}" up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; exit 1; }
grep -i -E "warn|ignor" "$WORK/up.log" | sort -u || true

# The worker reads MNIST from its data volume; nothing is downloaded at run time.
podman cp "$DATA/mnist" "${PROJECT}_worker_1:/data/"
podman exec -u 0 "${PROJECT}_worker_1" chown -R 10001:10001 /data/mnist

# ---------------------------------------------------------------- 5. end to end
log "end-to-end test"
"$PYTHON" scripts/containers_e2e.py --url "http://127.0.0.1:$GATEWAY_PORT" \
  --key "$ADMIN_KEY" --project "$PROJECT" --mnist "$DATA/mnist"

log "images"
printf '%-44s %9s %9s\n' image "size MB" "build s"
while read -r image seconds; do
  size=$(podman image inspect --format '{{.Size}}' "$image")
  printf '%-44s %9d %9s\n' "$image" $((size / 1000000)) "$seconds"
done <"$WORK/build-times.txt"
cat "$WORK/bases.txt"
gateway_mb=$(($(podman image inspect --format '{{.Size}}' "fdl-serve/gateway:$VERSION") / 1000000))
[ "$gateway_mb" -le 450 ] || { echo "the gateway image is $gateway_mb MB (limit 450)"; exit 1; }
log "containers test passed in $((SECONDS - START)) s"
