#!/usr/bin/env bash
# Make sure a Docker engine answers; start one (as root) when none does, installing Debian's
# docker.io first when dockerd is missing (deploy/docker/host-packages.sh).
#   DOCKERD_FLAGS   dockerd flags, e.g. --storage-driver=vfs. Unset: dockerd's default storage
#                   driver (overlay2), and --storage-driver=vfs when that one cannot start
#                   (overlayfs that cannot nest); vfs copies every layer, so it takes far more disk.
# The engine started here keeps running (its pid in build/dockerd.pid, its log in build/dockerd.log).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
docker="${DOCKER:-docker}"
# shellcheck source=deploy/docker/host-packages.sh
source "$repo/deploy/docker/host-packages.sh"
if "$docker" info >/dev/null 2>&1; then exit 0; fi
need_command dockerd docker.io "no Docker engine answers; dockerd starts one" || exit 1
[ "$(id -u)" = 0 ] || { echo "dockerd.sh: no Docker engine answers; start one (dockerd needs root)" >&2; exit 1; }
mkdir -p "$repo/build"

start() {  # start FLAGS...: dockerd in the background; succeeds once the engine answers
  setsid nohup dockerd "$@" > "$repo/build/dockerd.log" 2>&1 < /dev/null &
  echo $! > "$repo/build/dockerd.pid"
  for _ in $(seq 60); do
    if "$docker" info >/dev/null 2>&1; then
      echo "dockerd.sh: started dockerd $* (pid $(cat "$repo/build/dockerd.pid"))" >&2; return 0
    fi
    kill -0 "$(cat "$repo/build/dockerd.pid")" 2>/dev/null || return 1
    sleep 1
  done
  local pid; pid="$(cat "$repo/build/dockerd.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  return 1
}

if [ -n "${DOCKERD_FLAGS+set}" ]; then
  # shellcheck disable=SC2086
  start ${DOCKERD_FLAGS} && exit 0
elif start; then
  exit 0
else
  echo "dockerd.sh: dockerd did not start with its default storage driver; trying --storage-driver=vfs" >&2
  tail -5 "$repo/build/dockerd.log" >&2
  start --storage-driver=vfs && exit 0
fi
tail -20 "$repo/build/dockerd.log" >&2
echo "dockerd.sh: dockerd did not come up (its log above: build/dockerd.log)" >&2
exit 1
