#!/usr/bin/env bash
# `make test`: formatting, lints, the CRD drift check, and every test, unit tests and the
# tests against the local control plane. Starts the control plane when it is not running
# and stops it afterwards, even when something fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
START=$SECONDS
step() { echo "==> $* ($((SECONDS - START))s)" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: Rust is not installed; install it with rustup (https://rustup.rs) and retry." >&2
  exit 1
fi

STARTED_CLUSTER=0
cleanup() {
  local rc=$?
  if [[ $STARTED_CLUSTER == 1 ]]; then
    step "stopping the local control plane"
    bash "$ROOT/hack/cluster-down.sh" || true
  fi
  exit $rc
}
trap cleanup EXIT

if [[ -f .local-cluster/kubeconfig ]] && .local-cluster/bin/kubectl --kubeconfig .local-cluster/kubeconfig get --raw /readyz >/dev/null 2>&1; then
  step "using the running local control plane"
else
  STARTED_CLUSTER=1
  step "building (cached) and starting the local control plane"
  bash "$ROOT/hack/cluster-up.sh"
fi
BIN_DIR=$(readlink -f .local-cluster/bin)

step "Prometheus (Debian's package; tests start their own on loopback)"
PROMETHEUS_BIN=$(bash "$ROOT/hack/install-prometheus.sh")

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "CRD drift check (crds/ against rollguard crd)"
cargo build --quiet
for copy in crds/rollguard.yaml charts/rollguard/crds/rollguard.yaml; do
  if ! ./target/debug/rollguard crd | diff -u "$copy" -; then
    echo "error: $copy is out of date: run 'make crds' and commit the result" >&2
    exit 1
  fi
done

step "helm (built from its Go module, cached) for the chart tests"
HELM_BIN=$(bash "$ROOT/hack/build-helm.sh" | tail -n 1)

step "krew and validate-krew-manifest (built from their Go module, cached) for the plugin test"
KREW_TOOLS=$(bash "$ROOT/hack/build-krew.sh")
KREW_BIN=$(sed -n 1p <<<"$KREW_TOOLS")
KREW_VALIDATE_BIN=$(sed -n 2p <<<"$KREW_TOOLS")

step "kstatus (hack/kstatus over sigs.k8s.io/cli-utils, cached) for the Flux test"
KSTATUS_BIN=$(bash "$ROOT/hack/build-kstatus.sh" | tail -n 1)
command -v lua5.1 >/dev/null || { echo "error: lua5.1 is required for the Argo CD health tests (Debian package lua5.1; .ci/run installs it)" >&2; exit 1; }

step "make image (release build, packed with umoci) for the image test"
bash "$ROOT/hack/image.sh" >/dev/null

step "cargo test"
ROLLGUARD_TEST_KUBECONFIG="$ROOT/.local-cluster/kubeconfig" ROLLGUARD_KUBECTL="$BIN_DIR/kubectl" \
  ROLLGUARD_PROMETHEUS="$PROMETHEUS_BIN" ROLLGUARD_HELM="$HELM_BIN" \
  ROLLGUARD_KREW="$KREW_BIN" ROLLGUARD_KREW_VALIDATE="$KREW_VALIDATE_BIN" \
  ROLLGUARD_KSTATUS="$KSTATUS_BIN" cargo test --lib --bins --tests
step "cargo test --doc"
cargo test --doc
step "done"
