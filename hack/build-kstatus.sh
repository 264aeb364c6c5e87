#!/usr/bin/env bash
# hack/kstatus (a few lines over sigs.k8s.io/cli-utils' kstatus, the library Flux's health
# checks use), built against cli-utils $KSTATUS_VERSION and cached outside the repository,
# for the Flux test. Rebuilt when its source changes. Prints the binary's path last.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=${KSTATUS_VERSION:-v0.37.2}
CACHE_DIR=${ROLLGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollguard}
SUM=$(sha256sum "$ROOT/hack/kstatus/main.go" | cut -c1-12)
BIN="$CACHE_DIR/tools/kstatus-$VERSION-$SUM/bin/kstatus"
if [[ ! -x $BIN ]]; then
  command -v go >/dev/null 2>&1 || { echo "error: Go is required to build kstatus" >&2; exit 1; }
  echo "build-kstatus: building hack/kstatus against sigs.k8s.io/cli-utils $VERSION" >&2
  export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3+auto} GOFLAGS=${GOFLAGS:--buildvcs=false} CGO_ENABLED=0
  dir="$CACHE_DIR/tools/src/kstatus-$VERSION-$SUM"
  rm -rf "$dir"
  mkdir -p "$dir" "$(dirname "$BIN")"
  cp "$ROOT/hack/kstatus/main.go" "$dir/"
  cd "$dir"
  go mod init rollguard.local/kstatus >/dev/null 2>&1
  go mod edit -require="sigs.k8s.io/cli-utils@$VERSION"
  go mod tidy >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN.partial" .
  mv "$BIN.partial" "$BIN"
fi
echo "$BIN"
