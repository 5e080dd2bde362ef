# cxrl: one image for the reward services and the trainer (they share every dependency).
#   reward services (default): cxrl serve --config services/configs/serve-cpu.yaml --host 0.0.0.0
#   trainer:                   cxrl train --config /config/train.yaml
# The same image is the head/worker image of the KubeRay RayService and the trainer's Job or
# RayJob in deploy/.
#
# Build with `make images` (gathers the wheelhouse, then builds), or by hand from the repo root:
#   deploy/docker/wheelhouse.sh cpu
#   DOCKER_BUILDKIT=1 docker build --build-arg VARIANT=cpu -t cxrl/cxrl:0.1.0-cpu .
# Offline: every Python package comes from build/wheelhouse/ (pinned wheels gathered
# on the host by deploy/docker/wheelhouse.sh) with pip --no-index; no registry is asked.
# BASE_IMAGE: any Debian bookworm image with Python 3.11 and its venv module
# (deploy/docker/base-image.sh builds one with debootstrap where Docker Hub is unreachable).
# VARIANT=cpu: torch from the PyTorch CPU index (no CUDA libraries); VARIANT=cuda: the default
# torch wheel, which carries its own CUDA runtime, so only the host's NVIDIA driver is needed.
#
# Needs BuildKit (RUN --mount): the wheelhouse is bind-mounted, never copied into a layer.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The project's source on its own small stage: mounted into the build stage below, so that
# the large dependency layer is reused until pyproject.toml's pins change.
FROM ${BASE_IMAGE} AS source
COPY pyproject.toml README.md /src/
COPY protos /src/protos
COPY cxrl /src/cxrl
COPY services /src/services
COPY trainer /src/trainer

FROM ${BASE_IMAGE} AS build
ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels \
    PATH=/opt/venv/bin:$PATH
RUN --mount=type=bind,source=build/wheelhouse,target=/wheels \
    test "$(cat /wheels/VARIANT)" = "$VARIANT" \
      || { echo "build/wheelhouse holds the '$(cat /wheels/VARIANT)' wheels; run deploy/docker/wheelhouse.sh $VARIANT" >&2; exit 1; } \
 && python3 -m venv /opt/venv \
 && pip install -r /wheels/requirements.txt
# gRPC stubs are generated at build time (never committed); then the project is installed
# (setuptools and wheel for its build come from the wheelhouse too); pip leaves the image.
RUN --mount=type=bind,source=build/wheelhouse,target=/wheels \
    --mount=type=bind,from=source,source=/src,target=/src,rw \
    cd /src \
 && python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. \
      $(find protos -name '*.proto') \
 && pip install --no-deps . \
 && pip uninstall -y -q pip \
 && cd / && python -c "import cxrl.reward.v1.reward_pb2_grpc, services, trainer"

FROM ${BASE_IMAGE} AS runtime
ARG VARIANT=cpu
# tini: PID 1 that reaps the processes Ray leaves behind and forwards signals to cxrl alone
# (not to its process group: on SIGTERM `cxrl serve` stops Serve and Ray in order itself).
# wget: KubeRay's default readiness/liveness probes of Ray pods call it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini wget \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && groupadd --gid 10001 cxrl \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin cxrl \
 && mkdir -p /app/runs /models \
 && chown cxrl:cxrl /app/runs
WORKDIR /app
# Root-owned and read-only for the cxrl user: configs and the health check are code.
COPY services/configs /app/services/configs
COPY deploy/healthcheck.py /app/healthcheck.py
COPY --from=build /opt/venv /opt/venv
# HOME: Ray keeps its session token (RAY_AUTH_MODE=token) under ~/.ray; with a read-only root
# file system, mount a writable /tmp and /home/cxrl (compose does, with tmpfs).
# NVIDIA_DRIVER_CAPABILITIES: what the NVIDIA runtime mounts when GPUs are requested
# (CUDA compute + nvidia-ml for Ray's GPU detection); it exposes no device by itself.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/cxrl \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RAY_AUTH_MODE=token \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
LABEL org.opencontainers.image.title="cxrl" io.cxrl.variant="${VARIANT}"
USER 10001:10001
EXPOSE 9000 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
# Healthy = every Serve application answers Info over gRPC and the HTTP ingress answers.
# (The trainer's compose service and Job set their own check.)
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=4 \
  CMD ["python", "/app/healthcheck.py", "--grpc", "127.0.0.1:9000", "--http", "http://127.0.0.1:8000"]
CMD ["cxrl", "serve", "--config", "services/configs/serve-cpu.yaml", "--host", "0.0.0.0"]
