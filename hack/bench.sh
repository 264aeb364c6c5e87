#!/usr/bin/env bash
# `make bench`: the benchmarks against the local control plane (started when not running,
# stopped afterwards if this script started it). Each prints its figures.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source "$ROOT/hack/cluster-lib.sh"
use_bench_env
cargo bench --bench rollback_latency --bench canary_latency --bench metrics_rollback --bench slow_provider_rollback --bench warm_standby
