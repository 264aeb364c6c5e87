#!/usr/bin/env bash
# `make bench`: the benchmarks against the local control plane (started when not running,
# stopped afterwards if this script started it). Each prints its figures.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STARTED_CLUSTER=0
cleanup() {
  local rc=$?
  [[ $STARTED_CLUSTER == 1 ]] && bash "$ROOT/hack/cluster-down.sh" || true
  exit $rc
}
trap cleanup EXIT
if ! { [[ -f .local-cluster/kubeconfig ]] && .local-cluster/bin/kubectl --kubeconfig .local-cluster/kubeconfig get --raw /readyz >/dev/null 2>&1; }; then
  STARTED_CLUSTER=1
  bash "$ROOT/hack/cluster-up.sh"
fi
PROMETHEUS_BIN=$(bash "$ROOT/hack/install-prometheus.sh")
ROLLGUARD_TEST_KUBECONFIG="$ROOT/.local-cluster/kubeconfig" ROLLGUARD_PROMETHEUS="$PROMETHEUS_BIN" \
  cargo bench --bench rollback_latency --bench canary_latency --bench metrics_rollback --bench slow_provider_rollback
