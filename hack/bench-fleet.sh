#!/usr/bin/env bash
# `make bench-scale` and `make bench-peer`: the fleet benchmark (benches/fleet.rs) on the
# local control plane (started when not running, stopped afterwards if this script started
# it). `bench-peer` also builds (cached) and runs the Argo Rollouts controller doing the same
# work, and prints both side by side. ROLLGUARD_FLEET_SIZES (default 250,500,1000,2000)
# lists the fleet sizes.
#
#   hack/bench-fleet.sh [--peer]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source "$ROOT/hack/cluster-lib.sh"
use_bench_env
if [[ ${1:-} == --peer ]]; then
  ROLLGUARD_ARGO_ROLLOUTS=$(bash "$ROOT/hack/build-argo-rollouts.sh" | tail -n 1)
  export ROLLGUARD_ARGO_ROLLOUTS
fi
cargo bench --bench fleet -- "$@"
