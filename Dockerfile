# syntax=docker/dockerfile:1
# infergate: one image runs the gateway (the default command) or the drift monitor (by its command).
#
#   docker build -t infergate:cpu .
#   docker build -t infergate:gpu --build-arg FLAVOR=gpu .
#   docker run --rm -p 8001:8001 -p 8002:8002 -v "$PWD/demo-registry:/registry:ro" --stop-timeout 40 infergate:cpu
#   docker run --rm -p 8090:8090 -v "$PWD/demo-registry:/registry:ro" --no-healthcheck \
#       infergate:cpu infergate-monitor --registry /registry --host 0.0.0.0
#
# Build args:
#   FLAVOR    cpu (default) or gpu. gpu builds on GPU_BASE and installs requirements-gpu.lock, the hashed lock
#             of the `gpu` extra (onnxruntime-gpu) without the CPU onnxruntime wheel; see docs/production.md.
#   CPU_BASE  base image of the cpu flavor (default python:3.11-slim).
#   GPU_BASE  base image of the gpu flavor: a CUDA 13 + cuDNN 9 runtime (onnxruntime-gpu's requirement). It
#             ships no Python; the distribution's python3 and venv are installed on it.
# Dependencies come only from the hashed lock (pip --require-hashes); the project itself is built as a
# wheel with `pip wheel --no-deps` and installed into the same virtual environment, which the runtime stage
# copies. Nothing from the build (compilers, pip caches, sources) reaches the runtime image.

ARG FLAVOR=cpu
ARG CPU_BASE=python:3.11-slim
ARG GPU_BASE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

FROM ${CPU_BASE} AS base-cpu

FROM ${GPU_BASE} AS base-gpu
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# BuildKit builds only the base stage that FLAVOR names.
FROM base-${FLAVOR} AS base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

FROM base AS builder
ARG FLAVOR
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY requirements*.lock ./
RUN set -eu; \
    case "$FLAVOR" in \
        cpu) lock=requirements.lock ;; \
        gpu) lock=requirements-gpu.lock ;; \
        *) echo "FLAVOR must be cpu or gpu, not '$FLAVOR'" >&2; exit 1 ;; \
    esac; \
    if [ ! -f "$lock" ]; then echo "$lock is missing (docs/production.md, 'Container image')" >&2; exit 1; fi; \
    /opt/venv/bin/pip install --require-hashes -r "$lock"
COPY pyproject.toml README.md ./
COPY protos/ protos/
COPY registry/ registry/
COPY gateway/ gateway/
COPY monitor/ monitor/
COPY loadtests/ loadtests/
# cpu: --no-index proves that the lock satisfies every dependency of the project (nothing is fetched).
# gpu: the lock has onnxruntime-gpu instead of the onnxruntime distribution the project names, so the wheel
# goes in without its dependencies and the CUDA provider's presence is checked instead.
RUN set -eu; \
    /opt/venv/bin/pip wheel --no-deps -w /wheels .; \
    if [ "$FLAVOR" = gpu ]; then \
        /opt/venv/bin/pip install --no-deps /wheels/infergate-*.whl; \
        /opt/venv/bin/python -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; \
    else \
        /opt/venv/bin/pip install --no-index --find-links /wheels infergate; \
    fi; \
    /opt/venv/bin/infergate-gateway --help > /dev/null

FROM base AS runtime
ARG FLAVOR
LABEL org.opencontainers.image.title="infergate" \
      org.opencontainers.image.description="KServe V2 gRPC gateway for ONNX models, with a drift-monitor sidecar" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.infergate.flavor="${FLAVOR}"
RUN groupadd --system --gid 10001 infergate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/infergate --create-home \
        --shell /usr/sbin/nologin infergate
COPY --from=builder /opt/venv /opt/venv
# NUMBA_CACHE_DIR: the monitor's numba kernels cache their machine code there (site-packages is read-only
# to the user, and so is the whole root filesystem under Kubernetes; mount a writable /tmp there).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    INFERGATE_FLAVOR=${FLAVOR}
# The monitor's default history file (monitor.db) lands in the working directory.
WORKDIR /var/lib/infergate
USER 10001:10001
# 8001 gateway gRPC, 8002 gateway /metrics (worker i of --workers N: 8002 + i), 8090 monitor HTTP + WebSocket.
EXPOSE 8001 8002 8090
# For the gateway. Run the monitor with --no-healthcheck (or --health-cmd against its /healthz).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["infergate-health", "--target", "127.0.0.1:8001"]
STOPSIGNAL SIGTERM
# No ENTRYPOINT: the command is the program. The gateway drains on SIGTERM for --grace-seconds (30 by
# default), so give `docker stop` longer than that (--stop-timeout / -t).
CMD ["infergate-gateway", "--registry", "/registry", "--host", "0.0.0.0"]
