#!/usr/bin/env bash
# Builds the local control plane from Go modules into a cache outside the repository:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3), kwok and kwokctl (sigs.k8s.io/kwok).
# A binary that is already in the cache is not built again.
#
# Prints the binary directory on its last line.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.0}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE_DIR=${ROLLGUARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rollguard}
BIN_DIR="$CACHE_DIR/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
SRC_DIR="$CACHE_DIR/control-plane/src"

log() { echo "build-control-plane: $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not installed. rollguard builds its local Kubernetes control plane from Go modules;" >&2
  echo "       install Go 1.26 or newer (https://go.dev/doc/install, or your distribution's golang package) and retry." >&2
  exit 1
fi

# The modules declare `go 1.26.0`; an older local Go fetches a served toolchain.
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3+auto}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export CGO_ENABLED=0

mkdir -p "$BIN_DIR" "$SRC_DIR"

have_all() {
  local b
  for b in "$@"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

# new_module DIR NAME: a fresh wrapper module in DIR.
new_module() {
  rm -rf "$1"
  mkdir -p "$1"
  (cd "$1" && go mod init "$2" >/dev/null 2>&1)
}

build_kubernetes() {
  have_all kube-apiserver kube-controller-manager kube-scheduler kubectl && return 0
  log "building Kubernetes $K8S_VERSION (first build takes a while on 2 cores)"
  local dir="$SRC_DIR/kubernetes-$K8S_VERSION"
  new_module "$dir" rollguard.local/kubernetes
  cd "$dir"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
  # ./staging paths, which Go ignores in a dependency. Map each to its published version,
  # read from the module's own go.mod so new staging modules are picked up.
  local gomod staging_version
  gomod=$(go list -m -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$gomod" ]] || { echo "error: cannot read go.mod of k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
  staging_version="v0.${K8S_VERSION#v1.}"
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  local n=0
  while read -r mod _; do
    go mod edit -replace="$mod=$mod@$staging_version"
    n=$((n + 1))
  done < <(grep -E '^[[:space:]]*[^[:space:]]+ => \./staging/' "$gomod" | sed 's/^[[:space:]]*//')
  [[ $n -gt 0 ]] || { echo "error: found no staging replaces in $gomod" >&2; exit 1; }
  log "mapped $n staging modules to $staging_version"
  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  local p
  for p in "${pkgs[@]}"; do go mod edit -tool="$p"; done
  go mod tidy
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local v=k8s.io/component-base/version
  local ldflags="-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
  # kubectl reads its version from client-go's copy of the version package.
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/" "${pkgs[@]}"
}

build_etcd() {
  have_all etcd && return 0
  log "building etcd $ETCD_VERSION"
  local dir="$SRC_DIR/etcd-$ETCD_VERSION"
  new_module "$dir" rollguard.local/etcd
  cd "$dir"
  # The server module's root package is etcd's main; its own relative replaces are
  # ignored here, so it builds against the published etcd modules of the same version.
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION" -tool=go.etcd.io/etcd/server/v3
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  have_all kwok kwokctl && return 0
  log "building kwok $KWOK_VERSION"
  local dir="$SRC_DIR/kwok-$KWOK_VERSION"
  new_module "$dir" rollguard.local/kwok
  cd "$dir"
  go mod edit -require="sigs.k8s.io/kwok@$KWOK_VERSION" \
    -tool=sigs.k8s.io/kwok/cmd/kwok -tool=sigs.k8s.io/kwok/cmd/kwokctl
  go mod tidy
  go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    -o "$BIN_DIR/" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
}

(build_kwok)
(build_etcd)
(build_kubernetes)
log "binaries in $BIN_DIR"
echo "$BIN_DIR"
