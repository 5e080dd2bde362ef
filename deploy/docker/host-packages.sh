# Sourced by the release scripts (dockerd.sh, images.sh, base-image.sh): Debian host packages
# they need, installed when missing, as `make browser` does for Chromium.
#
#   need_command COMMAND PACKAGE WHY   # COMMAND on the PATH, or apt-get install PACKAGE (as root)
#   deb_candidate PACKAGE              # succeeds when apt knows an installable PACKAGE
#
# Installing needs root (or sudo without a password) and apt-get; otherwise the caller stops with
# a message saying what to install. The messages name the script that sourced this file.

_host_who="$(basename "${0:-release}")"

_host_root() {  # prints the command prefix that runs as root ("" or "sudo -n"), or fails
  if [ "$(id -u)" = 0 ]; then return 0; fi
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then echo "sudo -n"; return 0; fi
  return 1
}

deb_candidate() {
  command -v apt-cache >/dev/null || return 1
  local candidate
  candidate="$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
  [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}

_host_apt_install() {  # _host_apt_install PACKAGE WHY
  local sudo
  if ! command -v apt-get >/dev/null; then
    echo "$_host_who: needs $1 ($2); this host has no apt-get: install it with its package manager" >&2
    return 1
  fi
  if ! sudo="$(_host_root)"; then
    echo "$_host_who: needs $1 ($2): run as root, or first: sudo apt-get install $1" >&2
    return 1
  fi
  echo "$_host_who: installing Debian's $1 ($2)" >&2
  # shellcheck disable=SC2086
  if ! deb_candidate "$1"; then $sudo apt-get update -qq || true; fi
  # shellcheck disable=SC2086
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null; then
    echo "$_host_who: apt-get install $1 failed (see its messages above)" >&2
    return 1
  fi
}

need_command() {  # need_command COMMAND PACKAGE WHY
  command -v "$1" >/dev/null && return 0
  _host_apt_install "$2" "$3" || return 1
  hash -r
  command -v "$1" >/dev/null || { echo "$_host_who: $2 is installed but $1 is not on the PATH" >&2; return 1; }
}
