# FDL Serve images. Targets:
#   gateway       slim Python, the `api` extra only (no TensorFlow), fdl-gateway on :8000
#   worker        TensorFlow GPU (CUDA) base, the `training` extra, one Celery worker process
#   model-server  TensorFlow CPU base, the `serving` extra: fdl-model-server, installed also as
#                 `tensorflow_model_server`, with TF Serving's flags and ports (8500 gRPC, 8501
#                 REST), for machines without the tensorflow/serving image (arm64, laptops,
#                 offline); production serves with tensorflow/serving (deploy/compose.yaml).
# Build: docker build --target gateway -t fdl-serve/gateway:0.1.0 .
# podman/buildah: add `--format docker`, else the OCI format drops every HEALTHCHECK.
# PID 1 of every target is tini (Debian's and Ubuntu's package `tini`, from the base's own apt
# sources): it forwards SIGTERM to the program and reaps orphans. A program that is PID 1 itself
# has the kernel drop every signal it has no handler for yet, so a stop in its first second
# (before uvicorn or Celery install theirs) waited for the runtime's SIGKILL. Run the images with
# arguments (Kubernetes `args:`, compose `command:`), never an entrypoint of your own. `-s` (child
# subreaper): where tini is not PID 1 (a pod with shareProcessNamespace, `docker run --init`) it
# reaps orphans all the same, and does not warn at every start that it cannot.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG TENSORFLOW_IMAGE=tensorflow/tensorflow:2.21.0-gpu
ARG TENSORFLOW_CPU_IMAGE=tensorflow/tensorflow:2.21.0

# ---------------------------------------------------------------- gateway
FROM ${PYTHON_IMAGE} AS gateway-build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first (cached until pyproject.toml changes): install the extra from a source-less
# copy of the project, then drop the empty distribution.
COPY pyproject.toml README.md ./
# Versions are constrained in pyproject.toml (the project itself is the argument here).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[api]" \
    && pip uninstall --yes fdl-serve
COPY fdl ./fdl
COPY api ./api
# pip and setuptools only install: nothing imports them at run time (about 25 MB).
RUN pip install --no-cache-dir --no-deps . \
    && pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS gateway
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/fdl \
    FDL_GATEWAY_HOST=0.0.0.0 \
    FDL_GATEWAY_PORT=8000 \
    FDL_MODEL_DIR=/models \
    FDL_VAR_DIR=/var/lib/fdl
# The distribution's current tini (Debian bookworm here, Ubuntu in the TensorFlow bases).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fdl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/fdl --no-create-home fdl \
    && mkdir -p /models /var/lib/fdl \
    && chown 10001:10001 /models /var/lib/fdl
COPY --from=gateway-build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/fdl
EXPOSE 8000
# The probe listener's port when FDL_PROBE_PORT is set (not 0), else the gateway's: --from-env
# reads both as the gateway's settings do ("00" is 0, off), not as strings.
HEALTHCHECK --interval=15s --timeout=6s --start-period=20s --retries=3 \
    CMD ["python", "-m", "fdl.healthcheck", "--from-env", "/healthz"]
ENTRYPOINT ["/usr/bin/tini", "-s", "--"]
CMD ["fdl-gateway"]

# ---------------------------------------------------------------- worker
FROM ${TENSORFLOW_IMAGE} AS worker
# A virtual environment over the base image's Python: TensorFlow (and CUDA libraries) come from
# the image (tensorflow==2.21.* is already satisfied), the rest goes into /opt/venv, so pip never
# touches the distribution's own packages.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    HOME=/var/lib/fdl \
    MPLCONFIGDIR=/tmp/matplotlib \
    FDL_MODEL_DIR=/models \
    FDL_DATA_DIR=/data \
    FDL_VAR_DIR=/var/lib/fdl
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv --system-site-packages --without-pip /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN python -m pip install --no-cache-dir ".[training]" \
    && python -m pip uninstall --yes fdl-serve \
    && rm -rf build ./*.egg-info
COPY fdl ./fdl
COPY api ./api
COPY serving ./serving
COPY training ./training
# The sources (and setuptools' build/ and egg-info) leave the image's files once installed.
RUN python -m pip install --no-cache-dir --no-deps . \
    && rm -rf /src \
    && groupadd --system --gid 10001 fdl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/fdl --no-create-home fdl \
    && mkdir -p /models /data /var/lib/fdl /checkpoints \
    && chown 10001:10001 /models /data /var/lib/fdl /checkpoints
USER 10001:10001
WORKDIR /var/lib/fdl
# Pings this worker only, through the broker; a plain Celery client (no TensorFlow import). The
# node name is celery@<gethostname()>: `hostname` gives it where $HOSTNAME is unset (podman exec,
# podman healthcheck run).
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "export CELERY_BROKER_URL=\"$FDL_REDIS_URL\"; exec celery inspect ping --timeout 10 --destination \"celery@$(hostname)\""]
# Celery's worker with our app object (training/worker_main.py; `celery -A training.tasks` would
# import a training.py or training/ of the working folder instead): one process per GPU,
# concurrency 1, no prefetch (long jobs, acks_late). No -Q: the worker consumes the app's default
# queue, FDL_TRAINING_QUEUE, the one the gateway sends to. Arguments add worker options.
ENTRYPOINT ["/usr/bin/tini", "-s", "--"]
CMD ["fdl-worker"]

# ---------------------------------------------------------------- model-server
FROM ${TENSORFLOW_CPU_IMAGE} AS model-server
# TensorFlow comes from the base image, as in the worker; the `serving` extra goes into /opt/venv.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    HOME=/var/lib/fdl
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv --system-site-packages --without-pip /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN python -m pip install --no-cache-dir ".[serving]" \
    && python -m pip uninstall --yes fdl-serve \
    && rm -rf build ./*.egg-info
COPY fdl ./fdl
COPY serving ./serving
# Under TF Serving's name too, so compose and Kubernetes run it with the same entrypoint.
RUN python -m pip install --no-cache-dir --no-deps . \
    && rm -rf /src \
    && ln -s /opt/venv/bin/fdl-model-server /opt/venv/bin/tensorflow_model_server \
    && groupadd --system --gid 10001 fdl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/fdl --no-create-home fdl \
    && mkdir -p /models /var/lib/fdl \
    && chown 10001:10001 /models /var/lib/fdl
USER 10001:10001
WORKDIR /var/lib/fdl
EXPOSE 8500 8501
# An HTTP request to the REST port that must be answered within 4 s (coreutils' `timeout`, bash's
# /dev/tcp: what tensorflow/serving has too, no curl): the Prometheus path's status line, 200 with
# --monitoring_config_file (compose, Kubernetes), 404 without (this CMD); a 5xx fails. A frozen
# server (SIGSTOP, a deadlock) fails it; the kernel still accepts its connections, so the connect
# alone, the check before, passed. Kubernetes' liveness asks the gRPC health service instead.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=6 \
    CMD ["timeout", "4", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8501 && printf 'GET /monitoring/prometheus/metrics HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r proto code rest <&3 && [[ $proto == HTTP/* && $code == [1-4][0-9][0-9] ]]"]
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "tensorflow_model_server"]
CMD ["--port=8500", "--rest_api_port=8501", "--model_config_file=/models/models.config"]
