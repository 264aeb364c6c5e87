#!/usr/bin/env bash
# Prints the paths of the upstream CRD files of the traffic-split resources rollguard writes,
# taken from the projects' own Go modules through the Go module proxy (cached in the Go
# module cache): Gateway API HTTPRoute, SMI TrafficSplit, Istio VirtualService.
set -euo pipefail

GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.3}
SMI_VERSION=${SMI_VERSION:-v0.5.0}
ISTIO_API_VERSION=${ISTIO_API_VERSION:-v1.31.4}
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3+auto}
export GOFLAGS=${GOFLAGS:--buildvcs=false}

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not installed; install Go 1.26 or newer (https://go.dev/doc/install) and retry." >&2
  exit 1
fi

# `go mod download` needs a module to run in; an empty one outside the repository will do.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
go mod init rollguard.local/router-crds >/dev/null 2>&1

module_dir() {
  local dir
  dir=$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d "$dir" ]] || { echo "error: could not download Go module $1" >&2; exit 1; }
  echo "$dir"
}

gw=$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
smi=$(module_dir "github.com/servicemeshinterface/smi-sdk-go@$SMI_VERSION")
istio=$(module_dir "istio.io/api@$ISTIO_API_VERSION")

echo "$gw/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"
echo "$smi/crds/split.yaml"
echo "$istio/kubernetes/customresourcedefinitions.gen.yaml"
