# Sourced by scripts that need the local control plane: `use_cluster` starts it when it is
# not running and stops it on exit if it was started here.
STARTED_CLUSTER=0
stop_started_cluster() {
  local rc=$?
  [[ $STARTED_CLUSTER == 1 ]] && bash "$ROOT/hack/cluster-down.sh" || true
  exit $rc
}
use_cluster() {
  trap stop_started_cluster EXIT
  if ! { [[ -f .local-cluster/kubeconfig ]] && .local-cluster/bin/kubectl --kubeconfig .local-cluster/kubeconfig get --raw /readyz >/dev/null 2>&1; }; then
    STARTED_CLUSTER=1
    bash "$ROOT/hack/cluster-up.sh" || exit 1
  fi
}

# For the benchmarks: the cluster (as use_cluster) and Prometheus, with the variables that
# tests/support reads exported.
use_bench_env() {
  use_cluster
  ROLLGUARD_PROMETHEUS=$(bash "$ROOT/hack/install-prometheus.sh")
  export ROLLGUARD_TEST_KUBECONFIG="$ROOT/.local-cluster/kubeconfig" ROLLGUARD_PROMETHEUS
}
