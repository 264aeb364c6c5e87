#!/usr/bin/env bash
# Stops the local control plane (and what `make demo` started beside it) and removes its
# state (.local-cluster/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.local-cluster"
export KWOK_WORKDIR="$STATE/kwok"

# The demo's operator, Prometheus and simulated model servers.
for pidfile in "$STATE"/demo/*.pid; do
  [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
done

if [[ -d "$KWOK_WORKDIR/clusters/rollguard" ]]; then
  KWOKCTL=$(ls -d "${ROLLGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollguard}"/control-plane/*/bin/kwokctl 2>/dev/null | head -n 1 || true)
  if [[ -n "$KWOKCTL" ]]; then
    "$KWOKCTL" --name rollguard delete cluster >&2 || true
  fi
fi
# Whatever survived (a crashed kwokctl) is found by its state directory on the command line.
pkill -f -- "$STATE/" 2>/dev/null || true
rm -rf "$STATE"
echo "cluster-down: stopped and removed $STATE" >&2
