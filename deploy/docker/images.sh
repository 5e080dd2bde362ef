#!/usr/bin/env bash
# Build the images of the compose stack and deploy/: cxrl/cxrl:TAG-VARIANT (reward services and
# trainer in one image), cxrl/prometheus (Debian's prometheus on the same base, for the compose
# profile `monitoring`) and, with LOCAL_BASE=1, local stand-ins for the two Docker Hub images.
#
#   deploy/docker/images.sh [--if-missing] [--print-env]
#
#   VARIANT=cpu|cuda      torch without / with CUDA libraries (default cpu)
#   IMAGE_TAG=0.1.0       the image is cxrl/cxrl:$IMAGE_TAG-$VARIANT
#   BASE_IMAGE=...        default python:3.11-slim-bookworm (pulled by the build)
#   LOCAL_BASE=1          where Docker Hub cannot be reached: build the Python base with
#                         debootstrap (base-image.sh) and a Redis image from Debian's redis-server;
#                         LOCAL_BASE=auto (the default): 1 when Docker Hub does not answer
#   DOCKER=docker         the docker client; the build needs BuildKit (buildx, or a client < 23).
#                         Without either, the first docker on the PATH that has one is used, else
#                         Debian's docker-buildx (where apt has it) or docker.io's client (20.10,
#                         BuildKit built in) is installed (deploy/docker/host-packages.sh)
# --if-missing builds only images that are not there; --print-env prints CXRL_IMAGE=,
# CXRL_PROMETHEUS_IMAGE= and CXRL_REDIS_IMAGE= lines for docker compose (the rest goes to stderr).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
docker="${DOCKER:-docker}"
py="${PYTHON:-$repo/.venv/bin/python}"
variant="${VARIANT:-cpu}"
tag="${IMAGE_TAG:-0.1.0}"
base="${BASE_IMAGE:-python:3.11-slim-bookworm}"
redis_image="${CXRL_REDIS_IMAGE:-}"
prometheus_image=cxrl/prometheus:2.42-bookworm  # Debian bookworm's prometheus is 2.42
if_missing=0 print_env=0
for arg in "$@"; do
  case "$arg" in
    --if-missing) if_missing=1 ;;
    --print-env) print_env=1 ;;
    *) echo "images.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
exec 3>&1 1>&2  # stdout is for --print-env only
# shellcheck source=deploy/docker/host-packages.sh
source "$repo/deploy/docker/host-packages.sh"

builder() {  # builder CLIENT: sets build=(...) when CLIENT can build with BuildKit
  if "$1" buildx version >/dev/null 2>&1; then
    build=("$1" buildx build --load)
  elif [ "$("$1" version -f '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)" -lt 23 ] 2>/dev/null; then
    build=(env DOCKER_BUILDKIT=1 "$1" build)  # clients before 23 carry BuildKit themselves
  else
    return 1
  fi
}
pick_client() {  # $docker, else the first docker on the PATH that can build
  local client
  builder "$docker" && return 0
  for client in $(type -ap docker) /usr/bin/docker; do
    if [ -x "$client" ] && builder "$client"; then
      echo "images.sh: $docker has no BuildKit (no buildx plugin, client 23 or newer); using $client" >&2
      docker="$client"; return 0
    fi
  done
  return 1
}
build=()
if ! pick_client; then
  if deb_candidate docker-buildx; then
    _host_apt_install docker-buildx "the build needs BuildKit: the buildx plugin" || exit 1
  else  # Debian bookworm has no docker-buildx: docker.io's client (20.10) has BuildKit built in
    _host_apt_install docker.io "the build needs BuildKit: docker.io's client (20.10) has it" || exit 1
  fi
  pick_client || {
    echo "images.sh: the build needs BuildKit: install the buildx plugin (Debian: docker-buildx)," \
         "or set DOCKER to a docker client older than 23" >&2
    exit 1
  }
fi
have() { "$docker" image inspect "$1" >/dev/null 2>&1; }

if [ "${LOCAL_BASE:-auto}" = auto ]; then
  # Docker Hub's registry answers 401 to an anonymous request when it can be reached.
  if [ -n "${BASE_IMAGE:-}" ] || "$py" -c 'import urllib.request, urllib.error, sys
try:
    urllib.request.urlopen("https://registry-1.docker.io/v2/", timeout=10)
except urllib.error.HTTPError:
    sys.exit(0)
except OSError:
    sys.exit(1)' 2>/dev/null; then
    LOCAL_BASE=0
  else
    echo "images.sh: Docker Hub cannot be reached: LOCAL_BASE=1 (a Debian base built with debootstrap)" >&2
    LOCAL_BASE=1
  fi
fi
if [ "$LOCAL_BASE" = 1 ]; then
  base=cxrl/python:3.11-bookworm-debian
  have "$base" || DOCKER="$docker" "$repo/deploy/docker/base-image.sh" "$base"
  redis_image=cxrl/redis:7-bookworm-debian
  if ! { [ "$if_missing" = 1 ] && have "$redis_image"; }; then
    nice -n 10 "${build[@]}" -f deploy/docker/redis.Dockerfile --build-arg BASE_IMAGE="$base" \
      -t "$redis_image" deploy/docker
  fi
fi

image="cxrl/cxrl:$tag-$variant"
if [ "$if_missing" = 1 ] && have "$image"; then
  echo "images.sh: $image exists"
else
  "$repo/deploy/docker/wheelhouse.sh" "$variant"
  start=$(date +%s)
  nice -n 10 "${build[@]}" --build-arg BASE_IMAGE="$base" --build-arg VARIANT="$variant" -t "$image" .
  echo "images.sh: built $image in $(( $(date +%s) - start )) s"
  "$docker" image prune -f >/dev/null  # the previous build's image, now untagged
fi
if [ "$if_missing" = 1 ] && have "$prometheus_image"; then
  echo "images.sh: $prometheus_image exists"
else
  nice -n 10 "${build[@]}" -f deploy/docker/prometheus.Dockerfile --build-arg BASE_IMAGE="$base" \
    -t "$prometheus_image" deploy/docker
fi
"$docker" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^cxrl/' || true
if [ "$print_env" = 1 ]; then
  echo "CXRL_IMAGE=$image" >&3
  echo "CXRL_PROMETHEUS_IMAGE=$prometheus_image" >&3
  [ -z "$redis_image" ] || echo "CXRL_REDIS_IMAGE=$redis_image" >&3
fi
