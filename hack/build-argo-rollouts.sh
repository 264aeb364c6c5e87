#!/usr/bin/env bash
# The Argo Rollouts controller (github.com/argoproj/argo-rollouts), built from its Go module
# and cached, for the side-by-side benchmark (`make bench-peer`). Its CRDs are copied from
# the same module into crds/ beside bin/. Prints the binary's path on its last line.
#
# The module declares a Go newer than 1.26.8: GOTOOLCHAIN=go1.27.3+auto (the default of
# hack/build-go-tool.sh) fetches that toolchain from the Go module proxy.
set -euo pipefail
VERSION=${ARGO_ROLLOUTS_VERSION:-v1.10.2}
MODULE=github.com/argoproj/argo-rollouts
BIN=$(bash "$(dirname "${BASH_SOURCE[0]}")/build-go-tool.sh" argo-rollouts "$VERSION" "$MODULE" ./cmd/rollouts-controller \
  "-X $MODULE/utils/version.version=${VERSION#v} -X $MODULE/utils/version.gitTag=$VERSION" | tail -n 1)
CRDS="$(dirname "$BIN")/../crds"
if [[ ! -f $CRDS/rollout-crd.yaml ]]; then
  export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3+auto}
  src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$CRDS"
  cp "$src"/manifests/crds/*-crd.yaml "$CRDS/"
  chmod u+w "$CRDS"/*.yaml
fi
echo "$BIN"
