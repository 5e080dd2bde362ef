#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim-bookworm where Docker Hub cannot be reached:
# a minimal Debian bookworm root file system (debootstrap, from the Debian archive) with
# Debian's Python 3.11 and venv module, imported as a one-layer image.
#
#   deploy/docker/base-image.sh [TAG]      # default tag: cxrl/python:3.11-bookworm-debian
#
# Needs root, debootstrap (installed when missing: deploy/docker/host-packages.sh) and a Docker
# engine (DOCKER: its client). Then build with
#   make images BASE_IMAGE=cxrl/python:3.11-bookworm-debian
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
tag="${1:-cxrl/python:3.11-bookworm-debian}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
docker="${DOCKER:-docker}"
# shellcheck source=deploy/docker/host-packages.sh
source "$repo/deploy/docker/host-packages.sh"
if "$docker" image inspect "$tag" >/dev/null 2>&1; then
  echo "base-image.sh: $tag exists"; exit 0
fi
need_command debootstrap debootstrap "the local base image is a debootstrap of Debian bookworm" || exit 1
[ "$(id -u)" = 0 ] || { echo "base-image.sh: debootstrap needs root" >&2; exit 1; }
root="$(mktemp -d /var/tmp/cxrl-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$mirror" \
  || { echo "base-image.sh: debootstrap of bookworm from $mirror failed (DEBIAN_MIRROR: another mirror)" >&2; exit 1; }
# Same apt sources as the official Debian images; no caches, logs or docs in the layer.
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
  "$mirror" "$mirror" > "$root/etc/apt/sources.list"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" --numeric-owner -c . | "$docker" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase --include=python3,python3-venv bookworm" \
  - "$tag"
"$docker" run --rm "$tag" python3 -c 'import sys, venv; print("base-image.sh:", sys.version.split()[0])'
