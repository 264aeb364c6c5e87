#!/usr/bin/env bash
# `make demo`: starts the local control plane, installs the CRDs and the examples, and runs
# the operator in the foreground. The cluster stays up afterwards (`make cluster-down`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
NS=rollguard-demo

bash hack/cluster-up.sh
export KUBECONFIG="$ROOT/.local-cluster/kubeconfig"
export PATH="$ROOT/.local-cluster/bin:$PATH"

echo "==> building rollguard" >&2
cargo build --quiet

echo "==> kubectl apply -f crds/" >&2
kubectl apply -f crds/
kubectl wait --for=condition=Established crd/modeldeployments.rollguard.dev crd/rollbackpolicies.rollguard.dev --timeout=60s

echo "==> installing the Gateway API HTTPRoute CRD from the gateway-api Go module" >&2
kubectl apply --server-side --force-conflicts -f "$(bash hack/router-crds.sh | head -n 1)" >/dev/null
kubectl wait --for=condition=Established crd/httproutes.gateway.networking.k8s.io --timeout=60s

echo "==> kubectl apply -n $NS -f examples/" >&2
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n "$NS" -f examples/

cat >&2 <<MSG

==> running the operator in the foreground (Ctrl-C stops it; the cluster stays up)
    In another shell:
      export KUBECONFIG=$KUBECONFIG PATH=$ROOT/.local-cluster/bin:\$PATH
      kubectl get md -n $NS -w
      kubectl get rollguard -n $NS
      kubectl explain md.spec.strategy
    Stop the cluster with: make cluster-down

MSG
exec ./target/debug/rollguard run --namespace "$NS"
