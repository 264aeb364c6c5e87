#!/usr/bin/env bash
# Builds helm (helm.sh/helm/v3) from its Go module into a cache outside the repository, for
# the chart tests (`helm lint`, `helm template`). Skipped when the binary exists.
# Prints the binary's path on its last line.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
CACHE_DIR=${ROLLGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollguard}
BIN="$CACHE_DIR/tools/helm-$HELM_VERSION/bin/helm"

if [[ ! -x $BIN ]]; then
  command -v go >/dev/null 2>&1 || { echo "error: Go is required to build helm" >&2; exit 1; }
  echo "build-helm: building helm $HELM_VERSION from its Go module" >&2
  export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3+auto} GOFLAGS=${GOFLAGS:--buildvcs=false} CGO_ENABLED=0
  dir="$CACHE_DIR/tools/src/helm-$HELM_VERSION"
  rm -rf "$dir"
  mkdir -p "$dir" "$(dirname "$BIN")"
  cd "$dir"
  go mod init rollguard.local/helm >/dev/null 2>&1
  go mod edit -require="helm.sh/helm/v3@$HELM_VERSION" -tool=helm.sh/helm/v3/cmd/helm
  go mod tidy
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$BIN" helm.sh/helm/v3/cmd/helm
fi
echo "$BIN"
