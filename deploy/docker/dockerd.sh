#!/usr/bin/env bash
# Make sure a Docker engine answers; start one (as root) when none does.
#   DOCKERD_FLAGS   extra dockerd flags, e.g. --storage-driver=vfs where overlayfs cannot nest
# The engine started here keeps running (its pid in build/dockerd.pid, its log in build/dockerd.log).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
docker="${DOCKER:-docker}"
if "$docker" info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "dockerd.sh: no Docker engine answers and dockerd is not installed (Debian: apt-get install docker.io)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "dockerd.sh: no Docker engine answers; start one (needs root)" >&2; exit 1; }
mkdir -p "$repo/build"
# shellcheck disable=SC2086
setsid nohup dockerd ${DOCKERD_FLAGS:-} > "$repo/build/dockerd.log" 2>&1 < /dev/null &
echo $! > "$repo/build/dockerd.pid"
for _ in $(seq 60); do
  if "$docker" info >/dev/null 2>&1; then echo "dockerd.sh: started dockerd (pid $(cat "$repo/build/dockerd.pid"))" >&2; exit 0; fi
  kill -0 "$(cat "$repo/build/dockerd.pid")" 2>/dev/null || break
  sleep 1
done
echo "dockerd.sh: dockerd did not come up; its log:" >&2
tail -20 "$repo/build/dockerd.log" >&2
exit 1
