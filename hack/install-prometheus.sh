#!/usr/bin/env bash
# Installs Prometheus from Debian's packages when it is missing (tests and the demo start
# their own Prometheus on loopback; the package's service is not used). Prints its path.
set -euo pipefail

if ! command -v prometheus >/dev/null 2>&1; then
  echo "install-prometheus: installing Debian's prometheus package" >&2
  SUDO=""
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: prometheus is missing and this is not root (install the Debian package 'prometheus')" >&2; exit 1; }
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends prometheus >&2 \
    || { $SUDO apt-get update >&2 && $SUDO apt-get install -y --no-install-recommends prometheus >&2; }
  # The package may start its own service where an init system runs; tests do not use it.
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v prometheus
