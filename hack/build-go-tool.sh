#!/usr/bin/env bash
# Builds a Go tool that the tests or `make image` need from its Go module, into a cache
# outside the repository; skipped when the binary exists. Prints the binary's path on its
# last line.
#
#   hack/build-go-tool.sh NAME VERSION MODULE PACKAGE [LDFLAGS]
#
# The tool is built inside a copy of its own module (with `-mod=mod`), so its go.mod is the
# one that decides its dependencies, replace directives included.
set -euo pipefail

NAME=$1 VERSION=$2 MODULE=$3 PACKAGE=$4 LDFLAGS=${5:-}
CACHE_DIR=${ROLLGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollguard}
BIN="$CACHE_DIR/tools/$NAME-$VERSION/bin/$NAME"

if [[ ! -x $BIN ]]; then
  command -v go >/dev/null 2>&1 || { echo "error: Go is required to build $NAME" >&2; exit 1; }
  echo "build-go-tool: building $NAME $VERSION from the Go module $MODULE" >&2
  export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3+auto} GOFLAGS=${GOFLAGS:--buildvcs=false} CGO_ENABLED=0
  module=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit("go mod download: %s" % d.get("Error")))')
  dir="$CACHE_DIR/tools/src/$NAME-$VERSION"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")" "$(dirname "$BIN")"
  cp -r "$module" "$dir"
  chmod -R u+w "$dir"
  cd "$dir"
  go build -mod=mod -trimpath -ldflags "-s -w $LDFLAGS" -o "$BIN.partial" "$PACKAGE"
  mv "$BIN.partial" "$BIN"
fi
echo "$BIN"
