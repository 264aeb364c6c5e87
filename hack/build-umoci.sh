#!/usr/bin/env bash
# Builds umoci (github.com/opencontainers/umoci) from its Go module into a cache outside the
# repository, for `make image`. Skipped when the binary exists. Prints its path last.
#
# Not Debian's package: its umoci 0.4.7 writes layers whose tar stream is cut short (the
# last file loses its tail; opencontainers/umoci#436), which the image test caught.
# umoci's go.mod has a replace directive, so it is built inside a copy of its own module.
set -euo pipefail

UMOCI_VERSION=${UMOCI_VERSION:-v0.6.0}
CACHE_DIR=${ROLLGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollguard}
BIN="$CACHE_DIR/tools/umoci-$UMOCI_VERSION/bin/umoci"

if [[ ! -x $BIN ]]; then
  command -v go >/dev/null 2>&1 || { echo "error: Go is required to build umoci" >&2; exit 1; }
  echo "build-umoci: building umoci $UMOCI_VERSION from its Go module" >&2
  export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3+auto} GOFLAGS=${GOFLAGS:--buildvcs=false} CGO_ENABLED=0
  module=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "github.com/opencontainers/umoci@$UMOCI_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  dir="$CACHE_DIR/tools/src/umoci-$UMOCI_VERSION"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")" "$(dirname "$BIN")"
  cp -r "$module" "$dir"
  chmod -R u+w "$dir"
  cd "$dir"
  go build -mod=mod -trimpath -ldflags "-s -w" -o "$BIN" ./cmd/umoci
fi
echo "$BIN"
